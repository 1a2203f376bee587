"""Subprocess body of test_trainer_distributed: 2 logical CPUs, MirroredStrategy.

- `sum`: the 2-replica update equals the single-device update.
- the other methods: the update equals the `replica` definition of docs/harmonization.md computed independently:
  each replica's own (g_va, g_vt) from a plain tape.gradient of its share of the two global
  losses (negatives gathered, so this is the local examples' contribution to the global loss),
  harmonized with the NumPy reference, summed over replicas.
Logical devices must be configured before any TensorFlow op, hence a process of its own.
Prints one JSON line with the measured differences.
"""

import json

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import numpy as np  # noqa: E402
from reference import flat_grads, np_update  # noqa: E402
from toy import micro_vatt, random_batch  # noqa: E402

from vatt_gh import losses, trainer  # noqa: E402

B = 8
GAMMA = {"curriculum": 0.0}  # drops the replica whose cosine is negative; others at -0.2
METHODS = ("sum", "realign", "gradvac", "curriculum")  # `both` = realign + curriculum rules


def one_step(strategy, method, granularity, weights, batch):
    gamma = GAMMA.get(method, -0.2)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = trainer.PretrainModel(
            micro_vatt(),
            trainer.Harmonization(
                method=method,
                granularity=granularity,
                gamma_steps=10,
                gamma_start=gamma,
                gamma_end=gamma,
            ),
        )
        local = {k: v[: B // replicas] for k, v in batch.items()}
        strategy.run(lambda: model(local, training=False))
        model.vatt.set_weights(weights)
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(B, drop_remainder=True)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    pairs = replica_gradients(strategy, model, dataset)
    logs = model.make_train_function()(iterator)
    flat = np.concatenate([v.numpy().ravel() for v in model.vatt.trainable_variables])
    return flat, {k: np.asarray(v).tolist() for k, v in logs.items()}, pairs


def replica_gradients(strategy, model, dataset):
    """[(g_va, g_vt)] per replica, flattened, from plain tapes (no vatt_gh.harmonize)."""
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


def main():
    tf.keras.utils.set_random_seed(0)
    batch = random_batch(B, seed=5)
    initial = micro_vatt()
    initial(batch, training=False)
    weights = initial.get_weights()
    w0 = np.concatenate([v.numpy().ravel() for v in initial.trainable_variables])
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()
    report = {}
    for method in METHODS:
        got, logs, pairs = one_step(mirrored, method, "replica", weights, batch)
        single_w, ref_logs, _ = (
            one_step(single, method, "replica", weights, batch)
            if method == "sum"
            else (got, logs, None)
        )
        spec = sum(
            np_update(
                g_va, g_vt, method, gamma=GAMMA.get(method, -0.2), reweight=(2.5, 0.5), phi_hat=0.0
            )
            for g_va, g_vt in pairs
        )  # `replica` update of docs/harmonization.md
        total = sum(g_va + g_vt for g_va, g_vt in pairs)  # plain summed gradient
        scale = np.linalg.norm(total)
        cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in pairs]
        report[method] = dict(
            rel_error_spec=float(np.linalg.norm((w0 - got) - spec) / scale),
            rel_error_single=float(np.linalg.norm(got - single_w) / scale),  # sum only
            sum_of_replicas_vs_single=float(np.linalg.norm(total - (w0 - single_w)) / scale)
            if method == "sum"
            else None,
            update_norm=float(np.linalg.norm(w0 - got)),
            applied=logs["step_applied"],
            dropped=logs["dropped"],
            cosines=logs["cosines"],
            ref_cosines=cos,
            loss_va=logs["loss_va"],
            ref_loss_va=ref_logs["loss_va"],
            loss_vt=logs["loss_vt"],
            ref_loss_vt=ref_logs["loss_vt"],
        )
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()
