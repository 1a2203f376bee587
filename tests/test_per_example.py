"""vatt_gh.per_example (granularity 'example_fast') against materialising references.

References, independent of the fast path's formulas:
- explicit per-example weight copies on a toy (the definition written out: example i's forward
  uses its own copy W_i = W, and g_(i) = d loss / d W_i);
- on the micro VATT, every layer through the generic fallback (autodiff of the layer's call,
  per-example pfor Jacobians), checked to add up to the ordinary full-batch gradient;
- without coupling, the pfor-Jacobian 'example' granularity (per-example loss gradients).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from reference import flat_grads, np_update
from toy import micro_vatt, random_batch

import gin
from vatt_gh import harmonize, losses, per_example, trainer

B = 4
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "per_example_mirrored_helper.py")


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


def flat_rows(grads):
    """[(B, *shape)] -> (B, P) float64."""
    return np.concatenate([np.asarray(g, np.float64).reshape(g.shape[0], -1) for g in grads], 1)


def reference_update(f_va, f_vt, method, **kwargs):
    return sum(np_update(a, b, method, **kwargs) for a, b in zip(f_va, f_vt))


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


def toy_copies_reference(model, data):
    """Per-example gradients by definition: each example's forward uses its own weight copy."""
    batch = data["v"].shape[0]
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
        n: tf.Variable(tf.tile(v[None], [batch] + [1] * v.shape.rank)) for n, v in zip(names, base)
    }
    c = copies
    eps = model.norm.epsilon

    def tower(z):
        h = tf.tanh(tf.einsum("btk,bkh->bth", z, c["d1k"]) + c["d1b"][:, None])
        mean, var = tf.nn.moments(h, [-1], keepdims=True)
        h = (h - mean) * tf.math.rsqrt(var + eps) * c["g"][:, None] + c["b"][:, None]
        return tf.reduce_mean(tf.einsum("bth,bhe->bte", h, c["d2k"]) + c["d2b"][:, None], 1)

    with tf.GradientTape(persistent=True) as tape:
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
    f_va, f_vt, order = toy_copies_reference(model, data)
    return model, data, f_va, f_vt, order


@pytest.mark.parametrize("mode", ["ghost", "direct", "auto"])
def test_toy_stats_equal_explicit_weight_copies(toy, mode):
    model, data, f_va, f_vt, order = toy
    dot, nva, nvt, _ = per_example.per_example_statistics(
        toy_loss_fn(model, data), order, model, mode=mode
    )
    assert rel(dot, np.sum(f_va * f_vt, 1)) < 1e-5
    assert rel(nva, np.sum(f_va * f_va, 1)) < 1e-5
    assert rel(nvt, np.sum(f_vt * f_vt, 1)) < 1e-5


@pytest.mark.parametrize(
    "method,kwargs", [("both", {"gamma": -0.5}), ("gradvac", {"phi_hat": 0.3})]
)
def test_toy_update_equals_explicit_weight_copies(toy, method, kwargs):
    model, data, f_va, f_vt, order = toy
    update, stats, _ = per_example.harmonized_gradients(
        toy_loss_fn(model, data), order, model, method, **kwargs
    )
    want = reference_update(f_va, f_vt, method, **kwargs)
    assert rel(flat_grads(update, [v.shape for v in order]), want) < 1e-5
    cos = np.sum(f_va * f_vt, 1) / np.linalg.norm(f_va, axis=1) / np.linalg.norm(f_vt, axis=1)
    np.testing.assert_allclose(stats["cosine"], cos, atol=1e-5)
    assert np.any(cos < 0)  # the toy has conflicting examples, so weights are not all 1


@pytest.mark.parametrize("granularity,chunk", [("example", 4), ("example", 1), ("microbatch:3", 2)])
def test_chunked_jacobians_equal_unchunked(toy, granularity, chunk):
    model, data, _, _, order = toy
    loss_fn = toy_loss_fn(model, data)
    kwargs = dict(gamma=-0.4)
    u0, s0, _ = harmonize.harmonized_gradients(loss_fn, order, "both", granularity, **kwargs)
    u1, s1, _ = harmonize.harmonized_gradients(
        loss_fn, order, "both", granularity, chunk_size=chunk, **kwargs
    )
    shapes = [v.shape for v in order]
    assert rel(flat_grads(u1, shapes), flat_grads(u0, shapes)) < 1e-6
    assert s1["cosine"].shape == (6 // (2 if granularity == "microbatch:3" else 1),)
    for key in ("cosine", "dot", "alpha", "beta", "dropped"):
        np.testing.assert_allclose(s1[key], s0[key], rtol=1e-5, atol=1e-6)


def test_chunk_size_is_checked():
    with pytest.raises(ValueError, match="chunk_size 0"):
        trainer.Harmonization(granularity="example", chunk_size=0)
    assert harmonize.chunks(6, 4) == [(0, 4), (4, 6)]


# -------------------------------------------------------------------------- micro VATT
def vatt_loss_fn(vatt, batch, training=True):
    def loss_fn():
        out = vatt(batch, training=training)
        _, l_va = losses.nce(out["video_va"], out["audio_va"], batch["audio_mask"])
        _, l_vt = losses.mil_nce(out["video_vt"], out["text_vt"], batch["text_mask"])
        return l_va / 3.0, l_vt / 4.0, None

    return loss_fn


@pytest.fixture(scope="module")
def micro():
    """Micro VATT (BatchNorm in training mode, both contrastive losses) and its materialised
    per-example gradients through the generic fallback (chunks of 3: a partial last chunk)."""
    tf.keras.utils.set_random_seed(0)
    vatt = micro_vatt()
    batch = random_batch(B, seed=1)
    vatt(batch, training=False)
    variables = vatt.trainable_variables
    g_va, g_vt, _ = per_example.per_example_gradients(
        vatt_loss_fn(vatt, batch), variables, vatt, chunk_size=3
    )
    return vatt, batch, variables, flat_rows(g_va), flat_rows(g_vt)


def test_materialised_reference_adds_up_to_the_full_gradient(micro):
    """The forward-path decomposition is complete: sum_i g_(i) = grad(sum_i loss_i)."""
    vatt, batch, variables, f_va, f_vt = micro
    with tf.GradientTape(persistent=True) as tape:
        l_va, l_vt, _ = vatt_loss_fn(vatt, batch)()
        s_va, s_vt = tf.reduce_sum(l_va), tf.reduce_sum(l_vt)
    shapes = [v.shape for v in variables]
    full_va = flat_grads(
        [None if g is None else tf.convert_to_tensor(g) for g in tape.gradient(s_va, variables)],
        shapes,
    )
    full_vt = flat_grads(
        [None if g is None else tf.convert_to_tensor(g) for g in tape.gradient(s_vt, variables)],
        shapes,
    )
    assert rel(f_va.sum(0), full_va) < 1e-5
    assert rel(f_vt.sum(0), full_vt) < 1e-5
    assert np.count_nonzero(np.abs(f_va).sum(0)) > 0.9 * f_va.shape[1] * 0.5


@pytest.mark.parametrize("mode", ["ghost", "direct"])
def test_micro_vatt_stats_equal_materialised(micro, mode):
    vatt, batch, variables, f_va, f_vt = micro
    dot, nva, nvt, _ = per_example.per_example_statistics(
        vatt_loss_fn(vatt, batch), variables, vatt, mode=mode
    )
    assert rel(dot, np.sum(f_va * f_vt, 1)) < 1e-4
    assert rel(nva, np.sum(f_va * f_va, 1)) < 1e-4
    assert rel(nvt, np.sum(f_vt * f_vt, 1)) < 1e-4


@pytest.mark.parametrize("method", ["both", "curriculum", "realign", "gradvac"])
def test_micro_vatt_update_equals_materialised_weighted_sum(micro, method):
    vatt, batch, variables, f_va, f_vt = micro
    cos = np.sum(f_va * f_vt, 1) / np.linalg.norm(f_va, axis=1) / np.linalg.norm(f_vt, axis=1)
    kwargs = {
        "both": {"gamma": float(cos.min()) - 0.01},  # the most conflicting: projected
        "curriculum": {"gamma": float(np.median(cos))},  # half dropped
        "realign": {},
        "gradvac": {"phi_hat": 0.2},
    }[method]
    update, stats, _ = per_example.harmonized_gradients(
        vatt_loss_fn(vatt, batch), variables, vatt, method, **kwargs
    )
    want = reference_update(f_va, f_vt, method, **kwargs)
    scale = np.linalg.norm(f_va.sum(0) + f_vt.sum(0))
    got = flat_grads(update, [v.shape for v in variables])
    assert np.linalg.norm(got - want) / scale < 1e-4
    np.testing.assert_allclose(stats["cosine"], cos, atol=1e-4)


def test_interpolated_positions_equal_materialised():
    """Inputs off the configured grid: positional tables go through the spline (an Outer term
    with the interpolation matrix); the reference differentiates the spline itself."""
    vatt = micro_vatt()
    batch = dict(random_batch(2, seed=6))
    batch["audio"] = tf.concat([batch["audio"], batch["audio"][:, ::-1]], axis=1)  # 16 tokens
    vatt(batch, training=False)
    variables = vatt.trainable_variables
    loss_fn = vatt_loss_fn(vatt, batch)
    g_va, g_vt, _ = per_example.per_example_gradients(loss_fn, variables, vatt)
    f_va, f_vt = flat_rows(g_va), flat_rows(g_vt)
    dot, nva, nvt, _ = per_example.per_example_statistics(loss_fn, variables, vatt)
    assert rel(dot, np.sum(f_va * f_vt, 1)) < 1e-4
    assert rel(nva, np.sum(f_va * f_va, 1)) < 1e-4
    assert rel(nvt, np.sum(f_vt * f_vt, 1)) < 1e-4


def test_without_coupling_equals_example_granularity():
    """Per-example losses with no shared negatives and BatchNorm on moving statistics: the
    forward-path gradient is the loss-gradient of the example, i.e. the 'example' path."""
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
    fast_u, fast, _ = per_example.harmonized_gradients(loss_fn, variables, vatt, "realign")
    ref_u, ref, _ = harmonize.harmonized_gradients(loss_fn, variables, "realign", "example")
    for key in ("dot", "norm_va", "norm_vt", "cosine"):
        assert rel(fast[key], ref[key]) < 1e-4, key
    shapes = [v.shape for v in variables]
    assert rel(flat_grads(fast_u, shapes), flat_grads(ref_u, shapes)) < 1e-4


def test_with_coupling_the_two_definitions_differ(micro):
    """Contrastive negatives: forward-path ('example_fast') != loss-gradient ('example')."""
    vatt, batch, variables, f_va, f_vt = micro
    _, ref, _ = harmonize.harmonized_gradients(
        vatt_loss_fn(vatt, batch), variables, "sum", "example", chunk_size=2
    )
    assert rel(ref["dot"], np.sum(f_va * f_vt, 1)) > 1e-2


# --------------------------------------------------------------- trainer: gin, XLA, Mirrored
def test_gin_selects_example_fast_and_one_step_is_the_update():
    gin.clear_config()
    gin.parse_config(
        "Harmonization.granularity = 'example_fast'\n"
        "Harmonization.method = 'both'\n"
        "Harmonization.chunk_size = 2\n"
        "Harmonization.gamma_start = -0.2\nHarmonization.gamma_end = -0.2"
    )
    try:
        harmonization = trainer.Harmonization()
    finally:
        gin.clear_config()
    assert harmonization.granularity == "example_fast" and harmonization.chunk_size == 2
    model = trainer.PretrainModel(micro_vatt(), harmonization)
    batch = random_batch(B, seed=3)
    model(batch, training=False)
    model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    variables = model.vatt.trainable_variables
    shapes = [v.shape for v in variables]
    # Eager reference: the fast path itself, checked against materialised gradients above.
    want, _, _ = per_example.harmonized_gradients(
        model._loss_fn(batch), variables, model.vatt, "both", gamma=-0.2
    )
    want = flat_grads(want, shapes)
    w0 = flat_grads([v.numpy() for v in variables], shapes)
    logs = model.make_train_function()(iter(tf.data.Dataset.from_tensors(batch).repeat()))
    got = w0 - flat_grads([v.numpy() for v in variables], shapes)
    assert rel(got, want) < 1e-5
    assert logs["cosines"].shape == (B,)


@pytest.mark.slow
def test_example_fast_compiles_with_xla():
    """PretrainModel(xla_math=True): forward, both backward passes and the per-layer algebra
    as one XLA cluster; the step equals the eager fast path."""
    model = trainer.PretrainModel(
        micro_vatt(),
        trainer.Harmonization(
            method="both", granularity="example_fast", gamma_start=-0.5, gamma_end=-0.5
        ),
        xla_math=True,
    )
    batch = random_batch(B, seed=4)
    model(batch, training=False)
    model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    variables = model.vatt.trainable_variables
    shapes = [v.shape for v in variables]
    want, ref, _ = per_example.harmonized_gradients(
        model._loss_fn(batch), variables, model.vatt, "both", gamma=-0.5
    )
    w0 = flat_grads([v.numpy() for v in variables], shapes)
    logs = model.make_train_function()(iter(tf.data.Dataset.from_tensors(batch).repeat()))
    got = w0 - flat_grads([v.numpy() for v in variables], shapes)
    assert rel(got, flat_grads(want, shapes)) < 1e-4
    np.testing.assert_allclose(logs["cosines"], ref["cosine"], atol=1e-4)


@pytest.mark.slow
def test_example_fast_under_mirrored_strategy():
    """2 logical CPUs: the summed replica updates equal one device's (forward-path gradients
    are the same function of the global batch; d comes through all_gather)."""
    proc = subprocess.run([sys.executable, HELPER], capture_output=True, text=True, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1][len("RESULT ") :])
    assert report["update_norm"] > 0
    assert report["rel_error"] < 1e-5, report
    np.testing.assert_allclose(report["cosines"], report["ref_cosines"], atol=1e-5)
