"""PretrainModel.train_step against the update of docs/harmonization.md computed independently."""

import numpy as np
import pytest
import tensorflow as tf
from reference import flat_grads, np_update
from toy import group_gradients, micro_vatt, random_batch

from vatt_gh import harmonize, trainer

B = 4
CASES = [  # (method, granularity, Harmonization overrides)
    ("sum", "replica", {}),
    ("reweight", "replica", {"reweight": (0.5, 2.5)}),
    ("realign", "replica", {}),
    ("curriculum", "microbatch:2", {"gamma_start": 0.0, "gamma_end": 0.0}),
    ("both", "example", {"gamma_start": -0.05, "gamma_end": -0.05}),
    ("gradvac", "example", {}),
    ("realign", "example", {}),
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


@pytest.mark.parametrize("method,granularity,overrides", CASES)
def test_one_sgd_step_is_the_spec_update(method, granularity, overrides):
    """SGD(lr=1): w0 - w1 equals sum over groups of the NumPy-harmonized group gradients."""
    model = make_model(method, granularity, tf.keras.optimizers.SGD(1.0), **overrides)
    batch = random_batch(B, seed=1)
    shapes = [v.shape for v in model.vatt.trainable_variables]
    gamma = overrides.get("gamma_start", -0.3)
    reweight = overrides.get("reweight", harmonize.RW_VA)
    groups = harmonize.parse_granularity(granularity, B)
    want = sum(
        np_update(
            flat_grads(g_va, shapes),
            flat_grads(g_vt, shapes),
            method,
            gamma=gamma,
            reweight=reweight,
            phi_hat=0.0,
        )
        for g_va, g_vt in group_gradients(model.vatt, batch, groups)
    )
    # Scale: the plain summed gradient (`want` is all zeros when every group is dropped).
    scale = np.linalg.norm(
        sum(
            flat_grads(g_va, shapes) + flat_grads(g_vt, shapes)
            for g_va, g_vt in group_gradients(model.vatt, batch, 1)
        )
    )
    w0 = flat_weights(model)
    (logs,) = run_steps(model, batch)
    got = w0 - flat_weights(model)
    rel = np.linalg.norm(got - want) / scale
    assert rel < 1e-5, rel
    assert logs["step_applied"] == float(np.any(want))
    assert logs["cosines"].shape == (groups,)
    np.testing.assert_allclose(logs["gamma"], gamma, atol=1e-7)


def test_a_step_that_drops_everything_leaves_weights_and_adam_slots():
    # gamma = -1.5 at step 0 (every cosine is above it), 1.0 from step 1 (none is): all dropped.
    model = make_model(
        "curriculum", "example", tf.keras.optimizers.Adam(1e-2), gamma_start=-1.5, gamma_end=1.0
    )
    model.harmonization = trainer.Harmonization(
        method="curriculum", granularity="example", gamma_start=-1.5, gamma_end=1.0, gamma_steps=1
    )
    batch = random_batch(B, seed=2)
    train_fn = model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    first = train_fn(iterator)
    weights = flat_weights(model)
    slots = [v.numpy().copy() for v in model.optimizer.variables if "iteration" not in v.name]
    assert any(np.any(s) for s in slots)  # Adam's moments moved in the first step
    second = train_fn(iterator)
    assert float(first["step_applied"]) == 1.0 and float(second["step_applied"]) == 0.0
    np.testing.assert_allclose(float(second["gamma"]), 1.0)
    np.testing.assert_array_equal(flat_weights(model), weights)
    for before, v in zip(
        slots, [v for v in model.optimizer.variables if "iteration" not in v.name]
    ):
        np.testing.assert_array_equal(v.numpy(), before)
    assert int(model.optimizer.iterations.numpy()) == 2  # the step and the schedule advance


def test_nonfinite_values_skip_the_update_and_are_counted():
    model = make_model("sum", "replica", tf.keras.optimizers.SGD(1.0))
    batch = dict(random_batch(B, seed=3))
    batch["video"] = tf.tensor_scatter_nd_update(batch["video"], [[0, 0, 0, 0, 0]], [np.nan])
    weights = flat_weights(model)
    (logs,) = run_steps(model, batch)
    assert logs["nonfinite"] == 1.0 and logs["skipped_nonfinite"] == 1.0
    assert logs["step_applied"] == 0.0
    np.testing.assert_array_equal(flat_weights(model), weights)


@pytest.mark.slow
def test_the_step_maths_compiles_with_xla():
    """Forward, both tapes (pfor Jacobians) and harmonization as one XLA cluster."""
    ref = make_model(
        "both", "microbatch:2", tf.keras.optimizers.SGD(1.0), gamma_start=-0.99, gamma_end=-0.99
    )
    xla = make_model(
        "both",
        "microbatch:2",
        tf.keras.optimizers.SGD(1.0),
        xla_math=True,
        gamma_start=-0.99,
        gamma_end=-0.99,
    )
    xla.vatt.set_weights(ref.vatt.get_weights())
    batch = random_batch(B, seed=4)
    w0 = flat_weights(ref)
    (logs_ref,) = run_steps(ref, batch)
    (logs_xla,) = run_steps(xla, batch)
    want, got = w0 - flat_weights(ref), w0 - flat_weights(xla)
    assert np.linalg.norm(got - want) < 1e-4 * np.linalg.norm(want)
    np.testing.assert_allclose(logs_xla["cosines"], logs_ref["cosines"], atol=1e-4)
