"""Compares the contrastive losses on one device with 2 MirroredStrategy replicas (2 CPUs).

Run as a subprocess (logical devices must be configured before any TF op); prints one JSON line
with the largest absolute differences. Used by tests/test_losses_distributed.py.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from vatt_gh import losses  # noqa: E402

REPLICAS, LOCAL_BATCH, K, D_IN, D = 2, 4, 3, 6, 5
GLOBAL_BATCH = REPLICAS * LOCAL_BATCH


def make_data():
    rng = np.random.default_rng(0)
    x_video = rng.normal(size=(GLOBAL_BATCH, D_IN)).astype(np.float32)
    x_audio = rng.normal(size=(GLOBAL_BATCH, D_IN)).astype(np.float32)
    x_text = rng.normal(size=(GLOBAL_BATCH, K, D_IN)).astype(np.float32)
    audio_mask = np.ones(GLOBAL_BATCH, np.float32)
    audio_mask[[2, 5]] = 0.0  # clips without audio, one on each replica
    text_mask = (rng.uniform(size=(GLOBAL_BATCH, K)) > 0.3).astype(np.float32)
    text_mask[:, 0] = 1.0
    text_mask[6] = 0.0  # a clip without text on replica 1
    return x_video, x_audio, x_text, audio_mask, text_mask


def make_layers():
    """Tiny Dense projections feeding the losses; identical weights everywhere (fixed init)."""
    init = tf.keras.initializers.RandomNormal(stddev=1.0, seed=1)
    video = tf.keras.layers.Dense(D, kernel_initializer=init, name="video")
    other = tf.keras.layers.Dense(D, kernel_initializer=init, name="other")
    video.build((None, D_IN))
    other.build((None, D_IN))
    return video, other


def local_losses(layers, x_video, x_audio, x_text, audio_mask, text_mask):
    """(nce_mean, nce_per_ex, nce_count, mil_mean, mil_per_ex, mil_count)."""
    video_layer, other_layer = layers
    v = video_layer(x_video)  # (B, D)
    a = other_layer(x_audio)  # (B, D)
    t = other_layer(x_text)  # (B, K, D)
    nce_mean, nce_per_ex = losses.nce(v, a, audio_mask)
    mil_mean, mil_per_ex = losses.mil_nce(v, t, text_mask)
    return (
        nce_mean,
        nce_per_ex,
        losses.global_valid_count(audio_mask),
        mil_mean,
        mil_per_ex,
        losses.global_valid_count(text_mask),
    )


def gradients(layers, data):
    """Gradients of sum(per_example)/global count (what the trainer uses) and of `mean`."""
    variables = layers[0].trainable_variables + layers[1].trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        nce_mean, nce_per_ex, nce_n, mil_mean, mil_per_ex, mil_n = local_losses(layers, *data)
        trainer_loss = tf.reduce_sum(nce_per_ex) / nce_n + tf.reduce_sum(mil_per_ex) / mil_n
        mean_loss = nce_mean + mil_mean
    g_trainer = tape.gradient(trainer_loss, variables)
    g_mean = tape.gradient(mean_loss, variables)
    return nce_mean, nce_per_ex, mil_mean, mil_per_ex, g_trainer, g_mean


def flat(grads):
    return np.concatenate([np.ravel(g.numpy()) for g in grads])


def main():
    data = make_data()

    # One device, the whole global batch.
    single_layers = make_layers()
    s_nce, s_nce_ex, s_mil, s_mil_ex, s_grad, _ = gradients(single_layers, data)

    # Two replicas, half of the batch each.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == REPLICAS
    with strategy.scope():
        layers = make_layers()
    for var, ref in zip(
        layers[0].weights + layers[1].weights, single_layers[0].weights + single_layers[1].weights
    ):
        var.assign(ref)

    def shard(context):
        start = context.replica_id_in_sync_group * LOCAL_BATCH
        return tuple(tf.constant(x[start : start + LOCAL_BATCH]) for x in data)

    distributed_data = strategy.experimental_distribute_values_from_function(shard)

    @tf.function
    def step(data):
        return strategy.run(lambda *d: gradients(layers, d), args=data)

    d_nce, d_nce_ex, d_mil, d_mil_ex, d_grad, d_grad_mean = step(distributed_data)
    per_replica = strategy.experimental_local_results
    summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in d_grad]
    summed_mean = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in d_grad_mean]

    reference = flat(s_grad)
    ratio_mean = flat(summed_mean) / np.where(reference == 0, np.nan, reference)
    report = {
        "nce_mean_diff": max(abs(float(x) - float(s_nce)) for x in per_replica(d_nce)),
        "mil_mean_diff": max(abs(float(x) - float(s_mil)) for x in per_replica(d_mil)),
        "nce_per_example_diff": float(
            np.max(
                np.abs(
                    np.concatenate([x.numpy() for x in per_replica(d_nce_ex)]) - s_nce_ex.numpy()
                )
            )
        ),
        "mil_per_example_diff": float(
            np.max(
                np.abs(
                    np.concatenate([x.numpy() for x in per_replica(d_mil_ex)]) - s_mil_ex.numpy()
                )
            )
        ),
        "grad_diff": float(np.max(np.abs(flat(summed) - reference))),
        "grad_scale": float(np.max(np.abs(reference))),
        "mean_grad_ratio": float(np.nanmedian(ratio_mean)),
        "nce_per_example_zero": [float(x) for x in s_nce_ex.numpy()[[2, 5]]],
        "mil_per_example_zero": float(s_mil_ex.numpy()[6]),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
