"""One worker of a 2-worker MultiWorkerMirroredStrategy step (TF_CONFIG from the caller).

Each worker feeds its half of a fixed global batch; one SGD(1) step at method `sum`. The
chief writes the initial and final trainable weights to OUT/{initial,final}.npy and the
non-trainable ones it started from (the frozen word table, BatchNorm statistics) to
OUT/initial_frozen.npy, so the reference runs the same network.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from toy import micro_vatt, random_batch

from vatt_gh import trainer

B = 8


def main(out_dir):
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=120)
    )
    strategy.extended.experimental_enable_get_next_as_optional = False
    tf.keras.utils.set_random_seed(0)
    batch = random_batch(B, seed=7)
    half = B // 2
    with strategy.scope():
        model = trainer.PretrainModel(micro_vatt(), trainer.Harmonization(method="sum"))
        strategy.run(lambda: model({k: v[:half] for k, v in batch.items()}, training=False))
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    initial = np.concatenate([v.numpy().ravel() for v in model.vatt.trainable_variables])
    frozen = np.concatenate([v.numpy().ravel() for v in model.vatt.non_trainable_variables])

    def input_fn(context):  # worker i reads the i-th half
        i = context.input_pipeline_id
        part = {k: v[i * half : (i + 1) * half] for k, v in batch.items()}
        return tf.data.Dataset.from_tensors(part).repeat()

    iterator = iter(strategy.distribute_datasets_from_function(input_fn))
    logs = model.make_train_function()(iterator)
    final = np.concatenate([v.numpy().ravel() for v in model.vatt.trainable_variables])
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0:
        np.save(os.path.join(out_dir, "initial.npy"), initial)
        np.save(os.path.join(out_dir, "final.npy"), final)
        np.save(os.path.join(out_dir, "initial_frozen.npy"), frozen)
        np.save(os.path.join(out_dir, "cosines.npy"), logs["cosines"].numpy())


if __name__ == "__main__":
    main(sys.argv[1])
