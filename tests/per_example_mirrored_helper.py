"""Subprocess body of test_per_example's Mirrored test: 2 logical CPUs, granularity
'example_fast'. One SGD(1) step of `both` under MirroredStrategy against the same step on one
device (whose update test_per_example checks against materialised per-example gradients).
Logical devices must be configured before any TensorFlow op, hence a process of its own.
"""

import json

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import numpy as np  # noqa: E402
from toy import micro_vatt, random_batch  # noqa: E402

from vatt_gh import trainer  # noqa: E402

B = 8


def one_step(strategy, weights, batch):
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = trainer.PretrainModel(
            micro_vatt(),
            trainer.Harmonization(
                method="both",
                granularity="example_fast",
                chunk_size=3,
                gamma_steps=10,
                gamma_start=-0.2,
                gamma_end=-0.2,
            ),
        )
        local = {k: v[: B // replicas] for k, v in batch.items()}
        strategy.run(lambda: model(local, training=False))
        model.vatt.set_weights(weights)
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(B, drop_remainder=True)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    logs = model.make_train_function()(iterator)
    flat = np.concatenate([v.numpy().ravel() for v in model.vatt.trainable_variables])
    return flat, np.asarray(logs["cosines"]).tolist()


def main():
    tf.keras.utils.set_random_seed(0)
    batch = random_batch(B, seed=5)
    initial = micro_vatt()
    initial(batch, training=False)
    weights = initial.get_weights()
    w0 = np.concatenate([v.numpy().ravel() for v in initial.trainable_variables])
    got, cosines = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), weights, batch)
    want, ref_cosines = one_step(tf.distribute.get_strategy(), weights, batch)
    print(
        "RESULT "
        + json.dumps(
            dict(
                rel_error=float(np.linalg.norm(got - want) / np.linalg.norm(w0 - want)),
                update_norm=float(np.linalg.norm(w0 - got)),
                cosines=cosines,
                ref_cosines=ref_cosines,
            )
        )
    )


if __name__ == "__main__":
    main()
