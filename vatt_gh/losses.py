"""Contrastive losses of VATT (paper eqs. 2-3): NCE for video-audio, MIL-NCE for video-text.

Pure TensorFlow functions (no Keras). For clip b with video embedding v_b and positive partners
y_{b,1..L} (audio: L = 1; text: the K narrations), after L2 normalisation and s(x, y) = x.y / tau:

    loss_b = -log(P_b / D_b)
    P_b    = sum_l exp s(v_b, y_{b,l})
    D_b    = sum_c sum_l exp s(v_b, y_{c,l}) + sum_c sum_l exp s(v_c, y_{b,l})

(the positives appear twice in D_b, as in the public MIL-NCE / VATT code). c runs over the GLOBAL
batch: inside a replica context with several replicas, v, y and the masks are gathered from every
replica with `ReplicaContext.all_gather` (differentiable). Masked partners (padded narrations,
missing audio or text) contribute neither a loss term nor negatives: a masked y_{c,l} is left out
of every D, and the video v_c of a clip without any partner is left out of the second sum.

Gradients across replicas. Each loss returns (mean, per_example):
  * per_example: (B_local,) loss_b of THIS replica's clips, exactly 0 for clips without a partner.
  * mean: mean of loss_b over the valid clips of the global batch (identical on every replica).
The gradient of all_gather all-reduces (sums) the upstream gradients of every replica, so on
replica r the gradient of sum_{b in r} loss_b already carries the whole effect of r's embeddings
on every replica's loss terms. Hence, with N the global number of valid clips,

    sum over replicas of grad( sum(per_example) / N )  ==  single-device grad(global mean),

which is what an optimizer that SUMS replica gradients needs. Differentiating `mean` on every
replica instead gives num_replicas_in_sync times that gradient (the "2x trap" with 2 replicas:
every replica differentiates the whole global loss). Use `global_valid_count(mask)` for N.
"""

from typing import Optional, Tuple

import tensorflow as tf

# Logit given to masked-out pairs: exp() underflows to exactly 0 in float32, and it stays finite,
# so rows with nothing valid produce no NaN (in values or gradients) before being zeroed.
_MASKED_LOGIT = -1e9


def _replica_context():
    """The replica context if several replicas share the batch, else None (plain computation)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def _all_gather(x: tf.Tensor) -> tf.Tensor:
    """Concatenates x from every replica along axis 0 (identity with a single replica)."""
    context = _replica_context()
    if context is None:
        return x
    # tf.identity: all_gather of a tensor straight from a dataset fails (docs/tensorflow_notes.md).
    return context.all_gather(tf.identity(x), axis=0)


def _all_reduce_sum(x: tf.Tensor) -> tf.Tensor:
    context = _replica_context()
    if context is None:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(x))


def _l2_normalize(x: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def global_valid_count(mask: tf.Tensor) -> tf.Tensor:
    """Number of clips with at least one partner over the global batch (no gradient).

    mask: (B,) for NCE or (B, K) for MIL-NCE, float 0/1, this replica's rows.
    """
    mask = tf.cast(mask, tf.float32)
    if mask.shape.rank == 2:
        mask = tf.reduce_max(mask, axis=1)  # (B,)
    return tf.stop_gradient(_all_reduce_sum(tf.reduce_sum(mask)))


def mil_nce(
    video: tf.Tensor,
    text: tf.Tensor,
    text_mask: Optional[tf.Tensor] = None,
    temperature: float = 0.07,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """MIL-NCE between videos and their K positive narrations (paper eq. 3).

    Args:
      video: (B, D) video embeddings (vt space), this replica's clips.
      text: (B, K, D) narration embeddings; text[b, l] is a positive of video[b].
      text_mask: (B, K) float 0/1, 0 for a padded or missing narration; a clip whose row is all
        zero has no text and no loss term. None: every narration is valid.
      temperature: tau in s(x, y) = x.y / tau.

    Returns:
      (mean, per_example): scalar mean of loss_b over the valid clips of the global batch, and
      the (B,) vector loss_b of this replica's clips (0 for clips without text).
    """
    v = _l2_normalize(video)  # (B, D)
    y = _l2_normalize(text)  # (B, L, D)
    if text_mask is None:
        m = tf.ones(tf.shape(y)[:2], tf.float32)  # (B, L)
    else:
        m = tf.cast(text_mask, tf.float32)  # (B, L)
    valid = m > 0  # (B, L)
    clip_valid = tf.reduce_any(valid, axis=1)  # (B,)

    # Negatives over the global batch (G clips); this replica's rows stay the local tensors.
    v_all = _all_gather(v)  # (G, D)
    y_all = _all_gather(y)  # (G, L, D)
    valid_all = _all_gather(m) > 0  # (G, L)
    clip_valid_all = tf.reduce_any(valid_all, axis=1)  # (G,)

    # s(v_b, y_{c,l}): every video of this replica against every narration of the global batch.
    s_v_to_y = tf.einsum("bd,cld->bcl", v, y_all) / temperature  # (B, G, L)
    s_v_to_y = tf.where(valid_all[None], s_v_to_y, _MASKED_LOGIT)
    # s(v_c, y_{b,l}): every narration of this replica against every valid video.
    s_y_to_v = tf.einsum("cd,bld->bcl", v_all, y) / temperature  # (B, G, L)
    s_y_to_v = tf.where(clip_valid_all[None, :, None] & valid[:, None, :], s_y_to_v, _MASKED_LOGIT)
    # Positives s(v_b, y_{b,l}).
    s_pos = tf.einsum("bd,bld->bl", v, y) / temperature  # (B, L)
    s_pos = tf.where(valid, s_pos, _MASKED_LOGIT)

    batch = tf.shape(v)[0]
    log_d = tf.reduce_logsumexp(
        tf.concat([tf.reshape(s_v_to_y, [batch, -1]), tf.reshape(s_y_to_v, [batch, -1])], axis=1),
        axis=1,
    )  # (B,)
    log_p = tf.reduce_logsumexp(s_pos, axis=1)  # (B,)
    per_example = tf.where(clip_valid, log_d - log_p, 0.0)  # (B,)

    total = _all_reduce_sum(tf.reduce_sum(per_example))
    count = _all_reduce_sum(tf.reduce_sum(tf.cast(clip_valid, tf.float32)))
    mean = total / tf.maximum(count, 1.0)
    return mean, per_example


def nce(
    video: tf.Tensor, audio: tf.Tensor, mask: Optional[tf.Tensor] = None, temperature: float = 0.07
) -> Tuple[tf.Tensor, tf.Tensor]:
    """NCE between videos and their audio (paper eq. 2): MIL-NCE with one partner per clip.

    Args:
      video: (B, D) video embeddings (va space), this replica's clips.
      audio: (B, D) audio embeddings; audio[b] is the positive of video[b].
      mask: (B,) float 0/1, 0 for a clip without audio. None: every clip has audio.
      temperature: tau.

    Returns:
      (mean, per_example) as in `mil_nce`.
    """
    audio_mask = None if mask is None else tf.cast(mask, tf.float32)[:, None]  # (B, 1)
    return mil_nce(video, audio[:, None, :], audio_mask, temperature)
