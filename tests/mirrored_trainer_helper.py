"""Subprocess body of test_trainer_distributed: 4 logical CPUs, MirroredStrategy.

- every method at 'group:2': one device with the batch of 8 against 2 replicas with 4 clips
  each (the same clips in the same groups give the same update), and both against the
  definition computed independently: 4 replicas of 2 clips, each replica's own (g_va, g_vt)
  from plain tapes of its share of the global losses (negatives gathered: a group's
  contribution through its own forward path), harmonized with the NumPy reference, summed;
- skipped steps under 2 replicas (one NaN clip; every group dropped): every variable unchanged,
  BatchNorm moving statistics included;
- the analysis-only own-loss-term granularity raises at once under 2 replicas;
- every method with `statistics='heads'`, realign and both with 'top:1': one device against 2
  replicas.
Logical devices must be configured before any TensorFlow op, hence a process of its own; and
two MirroredStrategies over different device sets cannot share a process (their collectives
clash: "joining a group with size 2, but that group has size 4"), so the 4-replica reference
runs first as `mirrored_trainer_helper.py pairs OUT.npz`, then `... OUT.npz` compares.
Prints one JSON line with the measured differences.
"""

import json
import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 4
)

import numpy as np  # noqa: E402
from reference import flat_grads, np_update  # noqa: E402
from toy import micro_vatt, random_batch  # noqa: E402

from vatt_gh import losses, trainer  # noqa: E402
from vatt_gh.harmonize import METHODS  # noqa: E402

B = 8
# curriculum at 0.3: drops the groups whose cosine is at or below it (2 of the 4 groups of
# this batch: 0.12 and 0.24; kept 0.37 and 0.38); the other methods' gamma at -0.2
GAMMA = {"curriculum": 0.3}


def build(strategy, method, weights, batch, granularity="group:2", **overrides):
    gamma = GAMMA.get(method, -0.2)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = trainer.PretrainModel(
            micro_vatt(),
            trainer.Harmonization(
                method=method,
                granularity=granularity,
                gamma_steps=10,
                gamma_start=overrides.pop("gamma_start", gamma),
                gamma_end=overrides.pop("gamma_end", gamma),
                **overrides,
            ),
        )
        local = {k: v[: B // replicas] for k, v in batch.items()}
        strategy.run(lambda: model(local, training=False))
        model.vatt.set_weights(weights)
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    return model


def state(model):
    """Trainable weights and BatchNorm moving statistics, flattened."""
    moving = [
        v
        for layer in model.vatt.submodules
        if isinstance(layer, tf.keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]
    flat = lambda vs: np.concatenate([np.asarray(v.numpy(), np.float64).ravel() for v in vs])
    return flat(model.vatt.trainable_variables), flat(moving)


def one_step(strategy, method, weights, batch, **overrides):
    model = build(strategy, method, weights, batch, **overrides)
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(B, drop_remainder=True)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    logs = model.make_train_function()(iterator)
    return state(model), {k: np.asarray(v).tolist() for k, v in logs.items()}


def replica_pairs(strategy, weights, batch):
    """[(g_va, g_vt)] per replica, flattened, from plain tapes (no vatt_gh.harmonize)."""
    model = build(strategy, "sum", weights, batch)
    variables = model.vatt.trainable_variables

    def local(data):
        with tf.GradientTape(persistent=True) as tape:
            out = model.vatt(data, training=True)
            _, l_va = losses.nce(out["video_va"], out["audio_va"], data["audio_mask"])
            _, l_vt = losses.mil_nce(out["video_vt"], out["text_vt"], data["text_mask"])
            share_va = tf.reduce_sum(l_va) / losses.global_valid_count(data["audio_mask"])
            share_vt = tf.reduce_sum(l_vt) / losses.global_valid_count(data["text_mask"])
        dense = lambda gs: [
            tf.zeros(v.shape) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(gs, variables)
        ]
        return dense(tape.gradient(share_va, variables)), dense(tape.gradient(share_vt, variables))

    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(B, drop_remainder=True)
    data = next(iter(strategy.experimental_distribute_dataset(dataset)))
    g_va, g_vt = tf.function(lambda d: strategy.run(local, args=(d,)))(data)
    shapes = [v.shape for v in variables]
    per_replica = lambda gs: [
        [t.numpy() for t in strategy.experimental_local_results(g)] for g in gs
    ]
    va, vt = per_replica(g_va), per_replica(g_vt)
    return [
        (flat_grads([g[r] for g in va], shapes), flat_grads([g[r] for g in vt], shapes))
        for r in range(strategy.num_replicas_in_sync)
    ]


def heads_overrides(strategy, method, weights, batch):
    """statistics='heads'; curriculum's gamma between the head's 2nd and 3rd smallest cosine
    (from a first step), so that 2 of the 4 groups are dropped (at 0.3 all 4 are)."""
    if method != "curriculum":
        return dict(statistics="heads")
    _, logs = one_step(strategy, method, weights, batch, statistics="heads")
    low = np.sort(logs["cosines"])
    gamma = float(low[1] + low[2]) / 2
    return dict(statistics="heads", gamma_start=gamma, gamma_end=gamma)


def setup():
    tf.keras.utils.set_random_seed(0)
    batch = random_batch(B, seed=5)
    initial = micro_vatt()
    initial(batch, training=False)
    return batch, initial.get_weights(), state_of(initial)


def main():
    batch, weights, w0 = setup()
    if sys.argv[1] == "pairs":  # the 4 groups of 2 clips, by definition (a process of its own)
        four = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"])
        pairs = replica_pairs(four, weights, batch)
        np.savez(
            sys.argv[2], va=np.stack([a for a, _ in pairs]), vt=np.stack([b for _, b in pairs])
        )
        return
    saved = np.load(sys.argv[1])
    pairs = list(zip(saved["va"], saved["vt"]))
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()
    total = sum(a + b for a, b in pairs)
    scale = np.linalg.norm(total)
    report = {
        "cosines_4_replicas": [
            float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in pairs
        ]
    }
    for method in METHODS:
        spec = 0.5 * sum(  # halved: VATT's objective is (loss_va + loss_vt) / 2
            np_update(a, b, method, gamma=GAMMA.get(method, -0.2), reweight=(2.5, 0.5), phi_hat=0.0)
            for a, b in pairs
        )
        (w1, _), logs1 = one_step(single, method, weights, batch)
        (w2, _), logs2 = one_step(two, method, weights, batch)
        report[method] = dict(
            rel_two_vs_one=float(np.linalg.norm(w2 - w1) / scale),
            rel_one_vs_spec=float(np.linalg.norm((w0 - w1) - spec) / scale),
            update_norm=float(np.linalg.norm(w0 - w2)),
            cosines_one=logs1["cosines"],
            cosines_two=logs2["cosines"],
            applied=[logs1["step_applied"], logs2["step_applied"]],
            dropped=[logs1["dropped"], logs2["dropped"]],
        )
        # statistics='heads': the FAC head's statistics, one pass below it; same clips in the
        # same groups give the same update on one device and on two.
        heads = heads_overrides(single, method, weights, batch)
        (h1, _), heads1 = one_step(single, method, weights, batch, **heads)
        (h2, _), heads2 = one_step(two, method, weights, batch, **heads)
        report[method].update(
            heads_rel_two_vs_one=float(np.linalg.norm(h2 - h1) / scale),
            heads_update_norm=float(np.linalg.norm(w0 - h2)),
            heads_cosines_one=heads1["cosines"],
            heads_cosines_two=heads2["cosines"],
            dropped_heads=[heads1["dropped"], heads2["dropped"]],
        )
    # statistics='top:1' (the head, post-projections and the encoder's last layer): same check.
    for method in ("realign", "both"):
        (t1, _), top1 = one_step(single, method, weights, batch, statistics="top:1")
        (t2, _), top2 = one_step(two, method, weights, batch, statistics="top:1")
        report[f"top1_{method}"] = dict(
            rel_two_vs_one=float(np.linalg.norm(t2 - t1) / scale),
            update_norm=float(np.linalg.norm(w0 - t2)),
            cosines_one=top1["cosines"],
            cosines_two=top2["cosines"],
            heads_cosines=report[method]["heads_cosines_one"],
        )
    # Skipped steps under 2 replicas: a NaN clip on replica 1; every group dropped.
    nan_batch = dict(batch)
    nan_batch["video"] = tf.tensor_scatter_nd_update(batch["video"], [[5, 0, 0, 0, 0]], [np.nan])
    skipped = {}
    for name, method, data, overrides in (
        ("nan_clip", "both", nan_batch, {}),
        ("all_dropped", "curriculum", batch, {"gamma_start": 1.0, "gamma_end": 1.0}),
    ):
        model = build(two, method, weights, data, **overrides)
        before = state(model)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(B, drop_remainder=True)
        logs = model.make_train_function()(iter(two.experimental_distribute_dataset(dataset)))
        after = state(model)
        skipped[name] = dict(
            applied=float(logs["step_applied"]),
            weights_changed=float(np.abs(after[0] - before[0]).max()),
            moving_changed=float(np.nanmax(np.abs(after[1] - before[1])))
            if np.all(np.isfinite(after[1]))
            else "nan",
            step=int(model.optimizer.iterations.numpy()),
        )
    report["skipped"] = skipped
    # The analysis-only granularity under 2 replicas: an error at once, not a hang.
    model = build(two, "sum", weights, batch)
    local = {k: v[:4] for k, v in batch.items()}
    try:
        two.run(tf.function(lambda: model.gradient_stats(local, granularity="example")))
        report["own_loss_error"] = None
    except ValueError as e:
        report["own_loss_error"] = str(e)
    print("RESULT " + json.dumps(report))


def state_of(vatt):
    return np.concatenate(
        [np.asarray(v.numpy(), np.float64).ravel() for v in vatt.trainable_variables]
    )


if __name__ == "__main__":
    main()
