"""PretrainModel.train_step against the update of docs/harmonization.md computed independently."""

import numpy as np
import pytest
import tensorflow as tf
from reference import flat_grads, np_update
from toy import micro_vatt, random_batch, tape_group_gradients

from vatt_gh import group_stats, harmonize, losses, trainer

B = 4
CASES = [  # (method, granularity, Harmonization overrides)
    ("sum", "group:4", {"monitor_every": 1000}),  # one backward pass, no statistics
    ("sum", "group:2", {}),  # monitored: statistics, same update
    ("reweight", "group:1", {"reweight": (0.5, 2.5), "monitor_every": 1000}),
    ("reweight", "replica", {"reweight": (2.5, 0.5)}),
    ("realign", "replica", {}),
    ("realign", "group:2", {}),
    ("curriculum", "group:2", {"gamma_start": 0.0, "gamma_end": 0.0}),
    ("both", "group:1", {"gamma_start": -0.05, "gamma_end": -0.05}),
    ("gradvac", "group:1", {}),
]


def make_model(method, granularity, optimizer, xla_math=False, **overrides):
    harmonization = trainer.Harmonization(
        method=method, granularity=granularity, gamma_steps=10, **overrides
    )
    model = trainer.PretrainModel(micro_vatt(), harmonization, xla_math=xla_math)
    model(random_batch(B), training=False)  # build
    model.compile(optimizer=optimizer)
    return model


def run_steps(model, batch, steps=1):
    train_fn = model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    return [{k: v.numpy() for k, v in train_fn(iterator).items()} for _ in range(steps)]


def flat_weights(model):
    return flat_grads(
        [v.numpy() for v in model.vatt.trainable_variables],
        [v.shape for v in model.vatt.trainable_variables],
    )


def moving_statistics(model):
    return [
        v.numpy().copy()
        for layer in model.vatt.submodules
        if isinstance(layer, tf.keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


def forward_path_pairs(vatt, batch, size):
    """Reference pairs of the groups of `size` clips: the groups' gradients of the step's loss
    shares, every layer through the generic fallback (autodiff of its call; checked against
    explicit weight copies and the full gradient in test_group_stats), flattened."""
    variables = vatt.trainable_variables

    def loss_fn():
        out = vatt(batch, training=True)
        _, l_va = losses.nce(out["video_va"], out["audio_va"], batch["audio_mask"])
        _, l_vt = losses.mil_nce(out["video_vt"], out["text_vt"], batch["text_mask"])
        l_va = l_va / tf.reduce_sum(batch["audio_mask"])
        l_vt = l_vt / tf.reduce_sum(tf.reduce_max(batch["text_mask"], axis=1))
        return l_va, l_vt, None

    g_va, g_vt, _ = group_stats.group_gradients(loss_fn, variables, vatt, size)
    rows = lambda gs: np.concatenate(
        [np.asarray(g, np.float64).reshape(g.shape[0], -1) for g in gs], 1
    )
    return list(zip(rows(g_va), rows(g_vt)))


@pytest.mark.parametrize("method,granularity,overrides", CASES)
def test_one_sgd_step_is_the_spec_update(method, granularity, overrides):
    """SGD(lr): (w0 - w1) / lr equals half the sum over groups of the NumPy-harmonized group
    pairs. For
    `sum` / `reweight` unmonitored (one backward pass of the weighted sum), the reference is
    two plain tapes, one per loss, combined in NumPy. A large lr keeps the float32 difference
    w0 - w1 well above the rounding of the weights themselves (with lr=1 it is ~1e-4 relative)."""
    lr = 1e3
    model = make_model(method, granularity, tf.keras.optimizers.SGD(lr), **overrides)
    batch = random_batch(B, seed=1)
    shapes = [v.shape for v in model.vatt.trainable_variables]
    gamma = overrides.get("gamma_start", -0.3)
    reweight = overrides.get("reweight", harmonize.RW_VA)
    size = harmonize.parse_granularity(granularity, B).size
    if size == B:  # one group: two plain tapes
        pairs = [
            (flat_grads(a, shapes), flat_grads(b, shapes))
            for a, b in tape_group_gradients(model.vatt, batch, 1)
        ]
    else:
        pairs = forward_path_pairs(model.vatt, batch, size)
    # Halved: VATT's objective is (loss_va + loss_vt) / 2 (docs/losses.md).
    want = 0.5 * sum(
        np_update(a, b, method, gamma=gamma, reweight=reweight, phi_hat=0.0) for a, b in pairs
    )
    scale = np.linalg.norm(sum(a + b for a, b in pairs))  # `want` is 0 when all are dropped
    w0 = flat_weights(model)
    (logs,) = run_steps(model, batch)
    got = (w0 - flat_weights(model)) / lr
    rel = np.linalg.norm(got - want) / scale
    # VATT's model (LayerNorm over the positional tables, BatchNorm over 4 clips in the FAC head,
    # temperature 0.07) amplifies float32 rounding: the graph-mode step and the eager reference
    # differ by 1e-4 to 4e-4 relative (two eager orderings of the same sum: 1.3e-5). A wrong
    # weight, a missing group or a wrong projection moves the update by more than 1e-1.
    assert rel < 2e-3, rel
    assert logs["step_applied"] == float(np.any(want))
    monitored = overrides.get("monitor_every") is None
    assert logs["cosines"].shape == ((B // size,) if monitored else (0,))
    if monitored:
        cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in pairs]
        np.testing.assert_allclose(logs["cosines"], cos, atol=2e-4)  # rounding, as above
    np.testing.assert_allclose(logs["gamma"], gamma, atol=1e-7)


def test_the_sum_step_is_vatts_step():
    """`sum` (one backward pass) with SGD(lr): (w0 - w1) / lr is the gradient of VATT's
    objective (loss_va + loss_vt) / 2, the two global mean losses from one plain tape."""
    lr = 1e3
    model = make_model("sum", "group:4", tf.keras.optimizers.SGD(lr), monitor_every=1000)
    batch = random_batch(B, seed=1)
    variables = model.vatt.trainable_variables
    with tf.GradientTape() as tape:
        out = model.vatt(batch, training=True)
        loss_va, _ = losses.nce(out["video_va"], out["audio_va"], batch["audio_mask"])
        loss_vt, _ = losses.mil_nce(out["video_vt"], out["text_vt"], batch["text_mask"])
        objective = (loss_va + loss_vt) / 2
    grads = tape.gradient(objective, variables)
    want = flat_grads(
        [None if g is None else tf.convert_to_tensor(g) for g in grads],
        [v.shape for v in variables],
    )
    w0 = flat_weights(model)
    (logs,) = run_steps(model, batch)
    got = (w0 - flat_weights(model)) / lr
    assert logs["step_applied"] == 1.0
    # float32 rounding as amplified in test_one_sgd_step_is_the_spec_update; twice VATT's
    # step (the plain sum of the two gradients) would be off by 1.0
    assert np.linalg.norm(got - want) < 2e-3 * np.linalg.norm(want)


def test_sum_measures_its_cosines_every_monitor_every_steps():
    model = make_model("sum", "group:2", tf.keras.optimizers.SGD(0.0), monitor_every=3)
    logs = run_steps(model, random_batch(B, seed=5), steps=6)
    assert [len(l["cosines"]) for l in logs] == [0, 0, 2, 0, 0, 2]


def test_training_rejects_analysis_granularities_and_bad_groups():
    with pytest.raises(ValueError, match="analysis-only"):
        trainer.Harmonization(granularity="example")
    with pytest.raises(ValueError, match="N in 'group:N' must be >= 1"):
        trainer.Harmonization(granularity="group:0")
    model = make_model("both", "group:3", tf.keras.optimizers.SGD(1.0))
    with pytest.raises(ValueError, match="local batch of 4 clips does not split into groups of 3"):
        run_steps(model, random_batch(B))


def test_a_step_that_drops_everything_leaves_every_variable():
    """Weights, Adam slots and BatchNorm moving statistics stay; the step counter moves."""
    # gamma = -1 at step 0 (every cosine is above it), 1.0 from step 1 (none is): all dropped.
    model = make_model(
        "curriculum", "group:1", tf.keras.optimizers.Adam(1e-2), gamma_start=-1.0, gamma_end=1.0
    )
    model.harmonization = trainer.Harmonization(
        method="curriculum", granularity="group:1", gamma_start=-1.0, gamma_end=1.0, gamma_steps=1
    )
    batch = random_batch(B, seed=2)
    train_fn = model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    first = train_fn(iterator)
    weights, moving = flat_weights(model), moving_statistics(model)
    slots = [v.numpy().copy() for v in model.optimizer.variables if "iteration" not in v.name]
    assert any(np.any(s) for s in slots)  # Adam's moments moved in the first step
    second = train_fn(iterator)
    assert float(first["step_applied"]) == 1.0 and float(second["step_applied"]) == 0.0
    assert float(second["dropped"]) == 0.5  # 4 of the 8 groups of the two steps
    np.testing.assert_allclose(float(second["gamma"]), 1.0)
    np.testing.assert_array_equal(flat_weights(model), weights)
    for before, v in zip(
        slots, [v for v in model.optimizer.variables if "iteration" not in v.name]
    ):
        np.testing.assert_array_equal(v.numpy(), before)
    for before, after in zip(moving, moving_statistics(model)):
        np.testing.assert_array_equal(after, before)
    assert int(model.optimizer.iterations.numpy()) == 2  # the step and the schedule advance


@pytest.mark.parametrize("method,granularity", [("sum", "group:4"), ("gradvac", "group:1")])
def test_a_nan_clip_skips_the_step_and_leaves_every_variable(method, granularity):
    model = make_model(method, granularity, tf.keras.optimizers.SGD(1.0))
    batch = dict(random_batch(B, seed=3))
    batch["video"] = tf.tensor_scatter_nd_update(batch["video"], [[0, 0, 0, 0, 0]], [np.nan])
    weights, moving = flat_weights(model), moving_statistics(model)
    phi = float(model.phi_hat.numpy())
    (logs,) = run_steps(model, batch)
    assert logs["nonfinite"] == 1.0 and logs["skipped_nonfinite"] == 1.0
    assert logs["step_applied"] == 0.0
    np.testing.assert_array_equal(flat_weights(model), weights)
    assert moving and all(np.all(np.isfinite(m)) for m in moving_statistics(model))
    for before, after in zip(moving, moving_statistics(model)):
        np.testing.assert_array_equal(after, before)
    assert float(model.phi_hat.numpy()) == phi


def test_an_applied_step_moves_the_batchnorm_statistics():
    model = make_model("both", "group:2", tf.keras.optimizers.SGD(1.0), gamma_start=-1.0)
    moving = moving_statistics(model)
    (logs,) = run_steps(model, random_batch(B, seed=4))
    assert logs["step_applied"] == 1.0
    assert any(np.any(a != b) for a, b in zip(moving, moving_statistics(model)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,granularity,overrides",
    [
        ("both", "group:2", {"gamma_start": -0.99, "gamma_end": -0.99}),
        ("sum", "group:2", {"monitor_every": 1000}),  # the one-backward-pass path
    ],
)
def test_the_step_maths_compiles_with_xla(method, granularity, overrides):
    """Forward, the backward passes, the group statistics and harmonization as one XLA
    cluster; the step equals the one without XLA."""
    ref = make_model(method, granularity, tf.keras.optimizers.SGD(1.0), **overrides)
    xla = make_model(method, granularity, tf.keras.optimizers.SGD(1.0), xla_math=True, **overrides)
    xla.vatt.set_weights(ref.vatt.get_weights())
    batch = random_batch(B, seed=4)
    w0 = flat_weights(ref)
    (logs_ref,) = run_steps(ref, batch)
    (logs_xla,) = run_steps(xla, batch)
    want, got = w0 - flat_weights(ref), w0 - flat_weights(xla)
    # XLA fuses differently: float32 rounding, amplified as in test_one_sgd_step (1.2e-4 seen)
    assert np.linalg.norm(got - want) < 2e-3 * np.linalg.norm(want)
    np.testing.assert_allclose(logs_xla["cosines"], logs_ref["cosines"], atol=2e-4)
