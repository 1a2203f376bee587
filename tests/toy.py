"""Toy-sized models and batches shared by the trainer tests (deterministic, no randomness left
in the forward pass: DropToken and dropout off, so a reference can recompute it exactly)."""

import numpy as np
import tensorflow as tf

from vatt_gh import losses
from vatt_gh.models import build_vatt, get_config

DETERMINISTIC = dict(drop_token_rate=0.0, dropout_rate=0.0)


def micro_vatt(**overrides):
    return build_vatt("micro", **{**DETERMINISTIC, **overrides})


def random_batch(batch_size=4, num_texts=2, seed=0, preset="micro"):
    """A batch in the pipeline's contract, with a missing audio and a padded narration."""
    config = get_config(preset)
    rng = np.random.default_rng(seed)
    t, h, w = (g * p for g, p in zip(config.video_grid, config.video_patch_size))
    text = rng.integers(1, config.vocab_size, size=(batch_size, num_texts, config.text_grid))
    text[:, :, -2:] = 0  # padded tokens
    text_mask = np.ones((batch_size, num_texts), np.float32)
    text_mask[1, -1] = 0.0  # a padded narration
    audio_mask = np.ones(batch_size, np.float32)
    audio_mask[-1] = 0.0  # a clip without audio
    return {
        "video": tf.constant(rng.uniform(-1, 1, (batch_size, t, h, w, 3)), tf.float32),
        "audio": tf.constant(
            rng.normal(size=(batch_size, config.audio_grid * config.audio_patch_size)), tf.float32
        ),
        "text": tf.constant(text, tf.int32),
        "audio_mask": tf.constant(audio_mask),
        "text_mask": tf.constant(text_mask),
    }


def loss_shares(vatt, batch, va_count, vt_count, training=True):
    """A loss_fn for group_stats / harmonized_update: each clip's NCE and MIL-NCE terms divided
    by the global counts of clips with audio and with text (as `PretrainModel.loss_fn`)."""

    def loss_fn():
        out = vatt(batch, training=training)
        _, l_va = losses.nce(out["video_va"], out["audio_va"], batch["audio_mask"])
        _, l_vt = losses.mil_nce(out["video_vt"], out["text_vt"], batch["text_mask"])
        return l_va / va_count, l_vt / vt_count, None

    return loss_fn


def flat_rows(grads):
    """[(G, *shape)] per-group gradients -> (G, P) float64, one row per group."""
    grads = [np.asarray(tf.convert_to_tensor(g), np.float64) for g in grads]
    return np.concatenate([g.reshape(g.shape[0], -1) for g in grads], 1)


def tape_group_gradients(vatt, batch, num_groups, temperature=0.07):
    """Reference: one full-batch forward, then one tape.gradient per group and per loss of that
    group's share of the global mean losses (docs/harmonization.md, written out directly).
    `num_groups` equal groups in batch order (group_stats.group_gradients takes a group size)."""
    variables = vatt.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        out = vatt(batch, training=True)
        _, l_va = losses.nce(out["video_va"], out["audio_va"], batch["audio_mask"], temperature)
        _, l_vt = losses.mil_nce(out["video_vt"], out["text_vt"], batch["text_mask"], temperature)
        l_va = l_va / tf.reduce_sum(batch["audio_mask"])
        l_vt = l_vt / tf.reduce_sum(tf.reduce_max(batch["text_mask"], axis=1))
        size = l_va.shape[0] // num_groups
        parts = [
            (
                tf.reduce_sum(l_va[g * size : (g + 1) * size]),
                tf.reduce_sum(l_vt[g * size : (g + 1) * size]),
            )
            for g in range(num_groups)
        ]
    dense = lambda grads: [None if g is None else tf.convert_to_tensor(g) for g in grads]
    return [
        (dense(tape.gradient(a, variables)), dense(tape.gradient(b, variables))) for a, b in parts
    ]
