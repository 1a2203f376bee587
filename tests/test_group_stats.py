"""vatt_gh.group_stats (granularity 'group:N') against materialising references.

References, independent of the formulas of vatt_gh.group_stats:
- explicit per-group weight copies on a toy (the definition written out: the clips of group g
  use their own copy W_g = W in the forward, and G_g = d loss / d W_g);
- on the micro VATT, every layer through the generic fallback (autodiff of the layer's call,
  pfor Jacobians), checked to add up to the ordinary full-batch gradient;
- without coupling, the own-loss-term ('example') analysis granularity.
"""

import threading

import numpy as np
import pytest
import tensorflow as tf
from reference import flat_grads, np_update
from toy import flat_rows, loss_shares, micro_vatt, random_batch

from vatt_gh import group_stats
from vatt_gh.harmonized_update import harmonized_update, own_loss_terms

B = 4


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


def reference_update(f_va, f_vt, method, **kwargs):
    return sum(np_update(a, b, method, **kwargs) for a, b in zip(f_va, f_vt))


def dense(update):
    return [tf.convert_to_tensor(u) for u in update]


def stats_of(loss_fn, variables, model, size, mode="auto"):
    fwd = group_stats.forward(loss_fn, variables, model)
    pairs = group_stats.group_pairs(fwd, variables, size, mode=mode)
    return pairs.dot, pairs.nva, pairs.nvt


# ------------------------------------------------------------------------------- capture
def test_capture_records_the_chosen_layers_in_call_order_and_restores_them():
    d1, d2 = tf.keras.layers.Dense(3), tf.keras.layers.Dense(2)
    x = tf.ones([2, 4])
    d2(d1(x))
    original = d1.call
    with group_stats.capture_layer_calls([d1]) as outer:
        with group_stats.capture_layer_calls([d1, d2]) as inner:
            y = d2(d1(x))
        d1(x)
    assert [c.layer for c in inner] == [d1, d2]  # the innermost capture records
    assert [c.layer for c in outer] == [d1]  # the call after the inner block
    assert inner[1].args[0] is inner[0].outputs and inner[1].outputs is y
    assert d1.call == original and "call" not in d2.__dict__  # restored
    seen = []

    def other_thread():
        d1(x)  # not recorded: captures belong to the calling thread

    with group_stats.capture_layer_calls([d1]) as calls:
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        seen = list(calls)
    assert seen == []


def test_owned_variables_are_each_layers_own():
    vatt = micro_vatt()
    vatt(random_batch(2), training=False)
    owned = group_stats.owned_variables(vatt)
    flat = [v.ref() for vs in owned.values() for v in vs]
    assert len(flat) == len(set(flat))
    assert set(flat) == {v.ref() for v in vatt.trainable_variables}


# --------------------------------------------------------- toy: explicit per-example copies
D_IN, H, E, T = 5, 6, 4, 3


class Toy(tf.keras.Model):
    """A shared Dense (called on two modalities), LayerNorm, a second Dense with bias."""

    def __init__(self):
        super().__init__()
        self.d1 = tf.keras.layers.Dense(H, name="d1")
        self.norm = tf.keras.layers.LayerNormalization(name="norm")
        self.d2 = tf.keras.layers.Dense(E, name="d2")
        self.d3 = tf.keras.layers.Dense(E, use_bias=False, name="d3")

    def call(self, x):
        tower = lambda z: tf.reduce_mean(self.d2(self.norm(tf.tanh(self.d1(z)))), axis=1)
        return tower(x["v"]), tower(x["a"]), self.d3(x["t"])  # (B, E) each


def toy_data(batch=6, seed=0):
    rng = np.random.default_rng(seed)
    return {
        k: tf.constant(
            rng.normal(size=(batch, T, D_IN)) if k != "t" else rng.normal(size=(batch, D_IN)),
            tf.float32,
        )
        for k in "vat"
    }


def toy_nce(z_v, z_y):
    logits = (
        tf.matmul(tf.math.l2_normalize(z_v, -1), tf.math.l2_normalize(z_y, -1), transpose_b=True)
        / 0.3
    )
    return -tf.linalg.diag_part(tf.nn.log_softmax(logits, axis=1))  # (B,): coupled


def toy_loss_fn(model, data):
    def loss_fn():
        z_v, z_a, z_t = model(data)
        return toy_nce(z_v, z_a), toy_nce(z_v, z_t), None

    return loss_fn


def toy_copies_reference(model, data, size=1):
    """Per-group gradients by definition: the clips of group g use their own weight copy."""
    batch = data["v"].shape[0]
    groups = batch // size
    names = ["d1k", "d1b", "g", "b", "d2k", "d2b", "d3k"]
    base = [
        model.d1.kernel,
        model.d1.bias,
        model.norm.gamma,
        model.norm.beta,
        model.d2.kernel,
        model.d2.bias,
        model.d3.kernel,
    ]
    copies = {
        n: tf.Variable(tf.tile(v[None], [groups] + [1] * v.shape.rank)) for n, v in zip(names, base)
    }
    owner = np.arange(batch) // size  # clip -> its group's copy
    eps = model.norm.epsilon

    with tf.GradientTape(persistent=True) as tape:
        c = {n: tf.gather(v, owner) for n, v in copies.items()}  # (B, ...) per clip

        def tower(z):
            h = tf.tanh(tf.einsum("btk,bkh->bth", z, c["d1k"]) + c["d1b"][:, None])
            mean, var = tf.nn.moments(h, [-1], keepdims=True)
            h = (h - mean) * tf.math.rsqrt(var + eps) * c["g"][:, None] + c["b"][:, None]
            return tf.reduce_mean(tf.einsum("bth,bhe->bte", h, c["d2k"]) + c["d2b"][:, None], 1)

        z_v, z_a = tower(data["v"]), tower(data["a"])
        z_t = tf.einsum("bk,bke->be", data["t"], c["d3k"])
        l_va, l_vt = tf.reduce_sum(toy_nce(z_v, z_a)), tf.reduce_sum(toy_nce(z_v, z_t))
    order = [copies[n] for n in names]
    zero = tf.UnconnectedGradients.ZERO
    return (
        flat_rows(tape.gradient(l_va, order, unconnected_gradients=zero)),
        flat_rows(tape.gradient(l_vt, order, unconnected_gradients=zero)),
        base,
    )


@pytest.fixture(scope="module")
def toy():
    model = Toy()
    data = toy_data()
    model(data)
    return model, data


@pytest.mark.parametrize("size", [1, 2, 3, 6])
@pytest.mark.parametrize("mode", ["ghost", "direct", "auto"])
def test_toy_stats_equal_explicit_weight_copies(toy, mode, size):
    model, data = toy
    f_va, f_vt, order = toy_copies_reference(model, data, size)
    dot, nva, nvt = stats_of(toy_loss_fn(model, data), order, model, size, mode)
    assert dot.shape == (6 // size,)
    assert rel(dot, np.sum(f_va * f_vt, 1)) < 1e-5
    assert rel(nva, np.sum(f_va * f_va, 1)) < 1e-5
    assert rel(nvt, np.sum(f_vt * f_vt, 1)) < 1e-5


@pytest.mark.parametrize("size", [1, 2])
@pytest.mark.parametrize(
    "method,kwargs", [("both", {"gamma": -0.5}), ("gradvac", {"phi_hat": 0.3})]
)
def test_toy_update_equals_explicit_weight_copies(toy, method, kwargs, size, plan):
    model, data = toy
    f_va, f_vt, order = toy_copies_reference(model, data, size)
    update, stats, _ = harmonized_update(
        toy_loss_fn(model, data), order, model, *plan(method, f"group:{size}", **kwargs)
    )
    want = reference_update(f_va, f_vt, method, **kwargs)
    assert rel(flat_grads(dense(update), [v.shape for v in order]), want) < 1e-5
    cos = np.sum(f_va * f_vt, 1) / np.linalg.norm(f_va, axis=1) / np.linalg.norm(f_vt, axis=1)
    np.testing.assert_allclose(stats["cosine"], cos, atol=1e-5)
    assert np.any(cos < 0)  # the toy has conflicting groups, so weights are not all 1


def test_a_group_size_that_does_not_divide_the_batch_is_named(toy, plan):
    model, data = toy
    with pytest.raises(ValueError, match="local batch of 6 clips does not split into groups of 4"):
        harmonized_update(
            toy_loss_fn(model, data), model.trainable_variables, model, *plan("sum", "group:4")
        )


# -------------------------------------------------------------------------- micro VATT


@pytest.fixture(scope="module")
def micro():
    """Micro VATT (BatchNorm in training mode, both contrastive losses) and its materialised
    per-clip gradients through the generic fallback (chunks of 3: a partial last chunk)."""
    tf.keras.utils.set_random_seed(0)
    vatt = micro_vatt()
    batch = random_batch(B, seed=1)
    vatt(batch, training=False)
    variables = vatt.trainable_variables
    g_va, g_vt, _ = group_stats.group_gradients(
        loss_shares(vatt, batch, 3.0, 4.0), variables, vatt, 1, chunk_size=3
    )
    return vatt, batch, variables, flat_rows(g_va), flat_rows(g_vt)


def test_materialised_reference_adds_up_to_the_full_gradient(micro):
    """The forward-path decomposition is complete: sum_g G_g = grad(sum_i loss_i)."""
    vatt, batch, variables, f_va, f_vt = micro
    with tf.GradientTape(persistent=True) as tape:
        l_va, l_vt, _ = loss_shares(vatt, batch, 3.0, 4.0)()
        s_va, s_vt = tf.reduce_sum(l_va), tf.reduce_sum(l_vt)
    shapes = [v.shape for v in variables]
    full = lambda s: flat_grads(
        [None if g is None else tf.convert_to_tensor(g) for g in tape.gradient(s, variables)],
        shapes,
    )
    assert rel(f_va.sum(0), full(s_va)) < 1e-5
    assert rel(f_vt.sum(0), full(s_vt)) < 1e-5
    assert np.count_nonzero(np.abs(f_va).sum(0)) > 0.9 * f_va.shape[1] * 0.5


@pytest.mark.parametrize("mode", ["ghost", "direct"])
def test_micro_vatt_stats_equal_materialised(micro, mode):
    vatt, batch, variables, f_va, f_vt = micro
    dot, nva, nvt = stats_of(loss_shares(vatt, batch, 3.0, 4.0), variables, vatt, 1, mode)
    assert rel(dot, np.sum(f_va * f_vt, 1)) < 1e-4
    assert rel(nva, np.sum(f_va * f_va, 1)) < 1e-4
    assert rel(nvt, np.sum(f_vt * f_vt, 1)) < 1e-4


def test_groups_are_sums_of_their_clips(micro):
    """group:2's pair is the sum of its two clips' forward-path gradients."""
    vatt, batch, variables, f_va, f_vt = micro
    g_va, g_vt = f_va.reshape(2, 2, -1).sum(1), f_vt.reshape(2, 2, -1).sum(1)
    dot, nva, nvt = stats_of(loss_shares(vatt, batch, 3.0, 4.0), variables, vatt, 2)
    assert rel(dot, np.sum(g_va * g_vt, 1)) < 1e-4
    assert rel(nva, np.sum(g_va * g_va, 1)) < 1e-4
    assert rel(nvt, np.sum(g_vt * g_vt, 1)) < 1e-4


@pytest.mark.parametrize("method", ["both", "curriculum", "realign", "gradvac"])
def test_micro_vatt_update_equals_materialised_weighted_sum(micro, method, plan):
    vatt, batch, variables, f_va, f_vt = micro
    cos = np.sum(f_va * f_vt, 1) / np.linalg.norm(f_va, axis=1) / np.linalg.norm(f_vt, axis=1)
    kwargs = {
        "both": {"gamma": float(cos.min()) - 0.01},  # the most conflicting: projected
        "curriculum": {"gamma": float(np.median(cos))},  # half dropped
        "realign": {},
        "gradvac": {"phi_hat": 0.2},
    }[method]
    update, stats, _ = harmonized_update(
        loss_shares(vatt, batch, 3.0, 4.0), variables, vatt, *plan(method, "group:1", **kwargs)
    )
    want = reference_update(f_va, f_vt, method, **kwargs)
    scale = np.linalg.norm(f_va.sum(0) + f_vt.sum(0))
    got = flat_grads(dense(update), [v.shape for v in variables])
    assert np.linalg.norm(got - want) / scale < 1e-4
    np.testing.assert_allclose(stats["cosine"], cos, atol=1e-4)


def test_word_embedding_update_stays_sparse(plan):
    """A trainable word table: its update is an IndexedSlices (rows of the batch's tokens)."""
    vatt = micro_vatt(trainable_word_vectors=True)
    batch = random_batch(B, seed=2)
    vatt(batch, training=False)
    table = vatt.text_tokenizer.word_embedding.embeddings
    variables = vatt.trainable_variables
    assert any(v is table for v in variables)
    update, _, _ = harmonized_update(
        loss_shares(vatt, batch, 3.0, 4.0), variables, vatt, *plan("both", "group:1", gamma=-0.5)
    )
    (row,) = [u for u, v in zip(update, variables) if v is table]
    assert isinstance(row, tf.IndexedSlices)
    assert row.values.shape[0] == np.prod(batch["text"].shape)  # one row per token, not vocab


@pytest.mark.slow
def test_interpolated_positions_equal_materialised():
    """Inputs off the configured grid: positional tables go through the spline (an Outer term
    with the interpolation matrix); the reference differentiates the spline itself."""
    vatt = micro_vatt()
    batch = dict(random_batch(2, seed=6))
    batch["audio"] = tf.concat([batch["audio"], batch["audio"][:, ::-1]], axis=1)  # 16 tokens
    vatt(batch, training=False)
    variables = vatt.trainable_variables
    loss_fn = loss_shares(vatt, batch, 3.0, 4.0)
    g_va, g_vt, _ = group_stats.group_gradients(loss_fn, variables, vatt, 1)
    f_va, f_vt = flat_rows(g_va), flat_rows(g_vt)
    dot, nva, nvt = stats_of(loss_fn, variables, vatt, 1)
    assert rel(dot, np.sum(f_va * f_vt, 1)) < 1e-4
    assert rel(nva, np.sum(f_va * f_va, 1)) < 1e-4
    assert rel(nvt, np.sum(f_vt * f_vt, 1)) < 1e-4


@pytest.mark.slow
def test_without_coupling_equals_own_loss_terms(plan):
    """Per-clip losses with no shared negatives and BatchNorm on moving statistics: the
    forward-path gradient is the gradient of the clip's own loss (the 'example' analysis)."""
    vatt = micro_vatt()
    batch = random_batch(B, seed=2)
    vatt(batch, training=False)

    def loss_fn():
        out = vatt(batch, training=False)
        cos = lambda a, b: tf.reduce_sum(
            tf.math.l2_normalize(a, -1) * tf.math.l2_normalize(b, -1), -1
        )
        l_va = -cos(out["video_va"], out["audio_va"]) * batch["audio_mask"]  # (B,)
        l_vt = -tf.reduce_sum(
            cos(out["video_vt"][:, None], out["text_vt"]) * batch["text_mask"], 1
        )  # (B,)
        return l_va, l_vt, None

    variables = vatt.trainable_variables
    fast_u, fast, _ = harmonized_update(loss_fn, variables, vatt, *plan("realign", "group:1"))
    ref_u, ref, _ = own_loss_terms(loss_fn, variables, *plan("realign", "example"))
    for key in ("dot", "norm_va", "norm_vt", "cosine"):
        assert rel(fast[key], ref[key]) < 1e-4, key
    shapes = [v.shape for v in variables]
    assert rel(flat_grads(dense(fast_u), shapes), flat_grads(dense(ref_u), shapes)) < 1e-4


@pytest.mark.slow
def test_with_coupling_the_two_definitions_differ(micro, plan):
    """Contrastive negatives: forward path ('group:1') != own loss terms ('example')."""
    vatt, batch, variables, f_va, f_vt = micro
    _, ref, _ = own_loss_terms(
        loss_shares(vatt, batch, 3.0, 4.0), variables, *plan("sum", "example", chunk_size=2)
    )
    assert rel(ref["dot"], np.sum(f_va * f_vt, 1)) > 1e-2
