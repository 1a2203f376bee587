"""vatt_gh.harmonize against an independent float64 NumPy reading of the paper's formulas."""

import numpy as np
import pytest
import tensorflow as tf
from reference import flat_grads, np_update

from vatt_gh import harmonize as hz
from vatt_gh.harmonized_update import own_loss_terms

SHAPES = [(3, 4), (5,), (2, 2, 2)]
METHOD_CASES = [  # (method, kwargs)
    ("sum", {}),
    ("reweight", {"reweight": hz.RW_VA}),
    ("reweight", {"reweight": hz.RW_VT}),
    ("reweight", {"reweight": (0.7, 1.9)}),
    ("realign", {}),
    ("curriculum", {"gamma": -0.3}),
    ("curriculum", {"gamma": 0.0}),
    ("both", {"gamma": -0.3}),
    ("both", {"gamma": -0.05}),
    ("gradvac", {"phi_hat": 0.0}),
    ("gradvac", {"phi_hat": 0.25}),
]


def flat(grads, shapes=SHAPES):
    return flat_grads(grads, shapes)


def make_pair(kind, seed):
    rng = np.random.default_rng(seed)
    g_va = [rng.normal(size=s) for s in SHAPES]
    noise = [rng.normal(size=s) for s in SHAPES]
    if kind == "conflict":
        g_vt = [-0.8 * a + 0.5 * n for a, n in zip(g_va, noise)]
    elif kind == "mild_conflict":
        g_vt = [-0.15 * a + n for a, n in zip(g_va, noise)]
    elif kind == "agree":
        g_vt = [0.6 * a + 0.5 * n for a, n in zip(g_va, noise)]
    elif kind == "orthogonal":  # disjoint support: the dot product is exactly 0
        g_vt = [np.zeros(SHAPES[0]), noise[1], noise[2]]
        g_va = [g_va[0], np.zeros(SHAPES[1]), np.zeros(SHAPES[2])]
    elif kind == "zero":
        g_va = [np.zeros(s) for s in SHAPES]
        g_vt = noise
    elif kind == "none_entries":  # variable 1 only reached by video-audio, 2 only by video-text
        g_vt = [-0.7 * g_va[0] + noise[0], None, noise[2]]
        g_va = [g_va[0], g_va[1], None]
    else:
        raise ValueError(kind)
    as_tf = lambda gs: [None if g is None else tf.constant(g, tf.float32) for g in gs]
    return as_tf(g_va), as_tf(g_vt)


KINDS = ["conflict", "mild_conflict", "agree", "orthogonal", "zero", "none_entries"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method,kwargs", METHOD_CASES)
def test_harmonize_matches_numpy(method, kwargs, kind, plan):
    g_va, g_vt = make_pair(kind, seed=KINDS.index(kind))
    update, stats = hz.harmonize(g_va, g_vt, *plan(method, **kwargs))
    assert [tuple(u.shape) for u in update] == SHAPES
    f_va, f_vt = flat(g_va), flat(g_vt)
    want = np_update(f_va, f_vt, method, **kwargs)
    got = flat([u.numpy() for u in update])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(got))
    n = np.linalg.norm(f_va) * np.linalg.norm(f_vt)
    want_cos = f_va @ f_vt / n if n > 0 else 0.0
    np.testing.assert_allclose(stats["cosine"].numpy(), want_cos, atol=1e-6)
    np.testing.assert_allclose(stats["dot"].numpy(), f_va @ f_vt, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["norm_va"].numpy(), np.linalg.norm(f_va), rtol=1e-6)
    np.testing.assert_allclose(stats["norm_vt"].numpy(), np.linalg.norm(f_vt), rtol=1e-6)
    dropped = not np.any(want) and np.any(f_va + f_vt)
    assert stats["dropped"].numpy() == float(dropped)


def test_flags_follow_the_paper_rules():
    g_va, g_vt = make_pair("mild_conflict", 1)  # cos in (gamma=-0.3, 0): projected by `both`
    cos = float(hz.harmonize(g_va, g_vt, hz.Harmonization("sum"))[1]["cosine"])
    assert -0.3 < cos < 0
    assert float(hz.harmonize(g_va, g_vt, hz.Harmonization("realign"))[1]["projected"]) == 1.0
    assert (
        float(hz.harmonize(g_va, g_vt, hz.Harmonization("both"), gamma=-0.3)[1]["projected"]) == 1.0
    )
    assert (
        float(hz.harmonize(g_va, g_vt, hz.Harmonization("both"), gamma=-0.3)[1]["dropped"]) == 0.0
    )
    assert (
        float(hz.harmonize(g_va, g_vt, hz.Harmonization("both"), gamma=cos + 0.01)[1]["dropped"])
        == 1.0
    )
    assert (
        float(hz.harmonize(g_va, g_vt, hz.Harmonization("both"), gamma=cos + 0.01)[1]["projected"])
        == 0.0
    )
    # Cosine exactly 0 keeps the original pair ("zero or positive similarity").
    o_va, o_vt = make_pair("orthogonal", 2)
    for method in ("realign", "both"):
        update, stats = hz.harmonize(o_va, o_vt, hz.Harmonization(method), gamma=-0.3)
        assert float(stats["projected"]) == 0.0
        np.testing.assert_array_equal(flat(update), flat(o_va) + flat(o_vt))


def test_realign_removes_the_conflict():
    """After Algorithm 1 each projected gradient is orthogonal to the other original one: the
    weights the code returns, read as g_va' = g_va + (beta - 1) g_vt and
    g_vt' = g_vt + (alpha - 1) g_va, give g_va' . g_vt = 0 and g_vt' . g_va = 0."""
    g_va, g_vt = make_pair("conflict", 3)
    f_va, f_vt = flat(g_va), flat(g_vt)
    assert f_va @ f_vt < 0  # a conflicting pair: realign acts
    update, stats = hz.harmonize(g_va, g_vt, hz.Harmonization("realign"))
    a, b = float(stats["alpha"]), float(stats["beta"])
    new_va, new_vt = f_va + (b - 1.0) * f_vt, f_vt + (a - 1.0) * f_va
    scale = np.linalg.norm(f_va) * np.linalg.norm(f_vt)
    assert abs(new_va @ f_vt) < 1e-5 * scale
    assert abs(new_vt @ f_va) < 1e-5 * scale
    np.testing.assert_allclose(flat(update), new_va + new_vt, rtol=1e-5, atol=1e-6)


def test_gradvac_reaches_its_target_cosine():
    """Wang et al.: the vaccinated g_va' has cosine phi_hat with g_vt."""
    g_va, g_vt = make_pair("conflict", 4)
    phi = 0.3
    _, stats = hz.harmonize(g_va, g_vt, hz.Harmonization("gradvac"), phi_hat=phi)
    f_va, f_vt = flat(g_va), flat(g_vt)
    # beta - 1 = c_va: the multiple of g_vt added to g_va.
    new_va = f_va + (float(stats["beta"]) - 1.0) * f_vt
    cos = new_va @ f_vt / np.linalg.norm(new_va) / np.linalg.norm(f_vt)
    np.testing.assert_allclose(cos, phi, atol=1e-5)
    np.testing.assert_allclose(
        float(stats["phi_hat"]), 0.99 * phi + 0.01 * float(stats["cosine"]), rtol=1e-6
    )


def test_dropping_everything_gives_zeros_and_says_so():
    g_va, g_vt = make_pair("agree", 5)
    update, stats = hz.harmonize(g_va, g_vt, hz.Harmonization("curriculum"), gamma=1.0)
    assert all(not np.any(u.numpy()) for u in update)
    assert float(stats["dropped"]) == 1.0


def test_bad_arguments_are_named():
    g_va, g_vt = make_pair("agree", 6)
    with pytest.raises(ValueError, match="unknown harmonization method 'pcgrad'"):
        hz.Harmonization("pcgrad")
    with pytest.raises(ValueError, match="needs gamma"):
        hz.harmonize(g_va, g_vt, hz.Harmonization("curriculum"))
    with pytest.raises(ValueError, match="neither loss"):
        hz.harmonize([None], [None], hz.Harmonization())
    with pytest.raises(ValueError, match="does not split into 4"):
        hz.parse_granularity("microbatch:4", 6)
    with pytest.raises(ValueError, match="unknown granularity"):
        hz.parse_granularity("triplet", 6)
    with pytest.raises(ValueError, match="does not split into groups of 4"):
        hz.parse_granularity("group:4", 6)
    assert hz.parse_granularity("group:2", 6)[:2] == ("group", 2)
    assert hz.parse_granularity("replica", 6)[:2] == ("group", 6)
    assert hz.parse_granularity("microbatch:3", 6)[:2] == ("own_loss", 2)
    with pytest.raises(ValueError, match="analysis-only"):
        hz.Harmonization(granularity="example")


@pytest.mark.parametrize("step,want", [(0, -0.3), (250, -0.15), (500, 0.0), (10_000, 0.0)])
def test_linear_gamma(step, want):
    np.testing.assert_allclose(float(hz.linear_gamma(step, 500)), want, atol=1e-7)
    np.testing.assert_allclose(float(hz.linear_gamma(step, 500, 0.0, 0.0)), 0.0)  # Table 2 (0, 0)
    np.testing.assert_allclose(
        float(hz.linear_gamma(step, 500, -0.2, 0.0)), -0.2 + 0.2 * min(step / 500, 1.0), atol=1e-7
    )


def test_weights_match_the_update_for_each_pair(plan):
    """weights() on vectors of (dot, norms) gives, pair by pair, the NumPy update."""
    for method, kwargs in METHOD_CASES:
        pairs = [make_pair(k, 10 + i) for i, k in enumerate(KINDS)]
        flats = [(flat(a), flat(b)) for a, b in pairs]
        dot = np.array([a @ b for a, b in flats], np.float32)
        n_va = np.array([a @ a for a, _ in flats], np.float32)
        n_vt = np.array([b @ b for _, b in flats], np.float32)
        alpha, beta, *_ = hz.weights(dot, n_va, n_vt, *plan(method, **kwargs))
        for i, (a, b) in enumerate(flats):
            np.testing.assert_allclose(
                alpha[i].numpy() * a + beta[i].numpy() * b,
                np_update(a, b, method, **kwargs),
                rtol=1e-4,
                atol=1e-5,
            )


# ------------------------------------- own loss terms (the analysis granularity) on a real loss
B, D_IN, D_EMB = 6, 5, 4


def toy_problem(seed=0):
    """A coupled contrastive toy: negatives come from the whole batch, as in VATT."""
    rng = np.random.default_rng(seed)
    w_v = tf.Variable(rng.normal(size=(D_IN, D_EMB)), dtype=tf.float32, name="w_v")
    w_a = tf.Variable(rng.normal(size=(D_IN, D_EMB)), dtype=tf.float32, name="w_a")  # va only
    w_t = tf.Variable(rng.normal(size=(D_IN, D_EMB)), dtype=tf.float32, name="w_t")  # vt only
    x_v, x_a, x_t = (tf.constant(rng.normal(size=(B, D_IN)), tf.float32) for _ in range(3))
    variables = [w_v, w_a, w_t]

    def nce(z_v, z_y):
        logits = (
            tf.matmul(
                tf.math.l2_normalize(z_v, -1), tf.math.l2_normalize(z_y, -1), transpose_b=True
            )
            / 0.5
        )
        return -tf.linalg.diag_part(tf.nn.log_softmax(logits, axis=1))  # (B,)

    def loss_fn():
        z_v = tf.tanh(x_v @ w_v)
        return nce(z_v, x_a @ w_a) / B, nce(z_v, x_t @ w_t) / B, z_v

    return variables, loss_fn


def loop_reference(variables, loss_fn, groups, method, **kwargs):
    """One tape.gradient per group and per loss, harmonized one by one with NumPy."""
    shapes = [tuple(v.shape) for v in variables]
    size = B // groups
    total = 0.0
    for g in range(groups):
        with tf.GradientTape(persistent=True) as tape:
            loss_va, loss_vt, _ = loss_fn()
            part_va = tf.reduce_sum(loss_va[g * size : (g + 1) * size])
            part_vt = tf.reduce_sum(loss_vt[g * size : (g + 1) * size])
        f_va = flat(tape.gradient(part_va, variables), shapes)
        f_vt = flat(tape.gradient(part_vt, variables), shapes)
        total = total + np_update(f_va, f_vt, method, **kwargs)
    return total


GRANULAR_METHODS = [
    ("sum", {}),
    ("reweight", {"reweight": hz.RW_VT}),
    ("realign", {}),
    ("curriculum", {"gamma": -0.1}),
    ("both", {"gamma": -0.2}),
    ("gradvac", {"phi_hat": 0.2}),
]


@pytest.mark.parametrize("method,kwargs", GRANULAR_METHODS)
@pytest.mark.parametrize(
    "granularity,groups",
    [("example", B), ("microbatch:2", 2), ("microbatch:3", 3), ("microbatch:1", 1)],
)
def test_granularity_matches_a_python_loop(method, kwargs, granularity, groups, plan):
    variables, loss_fn = toy_problem(seed=groups)
    update, stats, _ = own_loss_terms(loss_fn, variables, *plan(method, granularity, **kwargs))
    want = loop_reference(variables, loss_fn, groups, method, **kwargs)
    got = flat([u.numpy() for u in update], [tuple(v.shape) for v in variables])
    rel = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12)
    assert rel < 1e-5, rel
    assert stats["cosine"].shape == (groups,)


def test_microbatch_extremes_equal_example_and_chunks_change_nothing(plan):
    variables, loss_fn = toy_problem(seed=7)
    for method, kwargs in GRANULAR_METHODS:
        uB, sB, _ = own_loss_terms(loss_fn, variables, *plan(method, f"microbatch:{B}", **kwargs))
        ue, se, _ = own_loss_terms(loss_fn, variables, *plan(method, "example", **kwargs))
        uc, sc, _ = own_loss_terms(
            loss_fn, variables, *plan(method, "example", chunk_size=4, **kwargs)
        )
        for a, b, c in zip(uB, ue, uc):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(sB["cosine"], se["cosine"], atol=1e-6)
        np.testing.assert_allclose(sc["cosine"], se["cosine"], atol=1e-6)


def test_example_granularity_drops_only_the_conflicting_examples(plan):
    variables, loss_fn = toy_problem(seed=3)
    _, stats, _ = own_loss_terms(loss_fn, variables, *plan("sum", "example"))
    cos = stats["cosine"].numpy()
    gamma = float(np.median(cos))
    h, _, _ = plan("curriculum", "example")
    _, stats, _ = own_loss_terms(loss_fn, variables, h, gamma=gamma)
    np.testing.assert_array_equal(stats["dropped"].numpy(), (cos <= gamma).astype(np.float32))


# ------------------------------------------------------------------------------------ XLA
@pytest.mark.parametrize("method,kwargs", METHOD_CASES)
def test_harmonize_compiles_with_xla(method, kwargs, plan):
    g_va, g_vt = make_pair("none_entries", 11)
    gamma = kwargs.get("gamma")
    h, _, phi_hat = plan(method, **kwargs)

    @tf.function(jit_compile=True)
    def step(a0, b0, a1, b2, gamma_t):
        return hz.harmonize(
            [a0, a1, None],
            [b0, None, b2],
            h,
            gamma=None if gamma is None else gamma_t,
            phi_hat=phi_hat,
        )

    update, stats = step(g_va[0], g_vt[0], g_va[1], g_vt[2], tf.constant(gamma or 0.0))
    want = np_update(flat(g_va), flat(g_vt), method, **kwargs)
    np.testing.assert_allclose(flat([u.numpy() for u in update]), want, rtol=1e-5, atol=1e-5)
    assert "cosine" in stats


def test_example_granularity_compiles_with_xla(plan):
    variables, loss_fn = toy_problem(seed=9)

    h, _, _ = plan("both", "example")

    @tf.function(jit_compile=True)
    def step(gamma):
        update, stats, _ = own_loss_terms(loss_fn, variables, h, gamma=gamma)
        return update, stats["cosine"]

    update, _ = step(tf.constant(-0.2))
    want = loop_reference(variables, loss_fn, B, "both", gamma=-0.2)
    got = flat([u.numpy() for u in update], [tuple(v.shape) for v in variables])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
