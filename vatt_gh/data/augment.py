"""Video and audio pre-processing: clip windows, crops, flips, colour jitter, audio windows.

Pure functions of tensors. Randomness comes from stateless ops seeded with a `(2,)` seed that the
pipeline derives from its base seed and the element index, so a pipeline is reproducible.
Frames are indexed at the stored frame rate `fps`: frame `i` shows time `i / fps`, and the audio
sample of that time is `i * sample_rate / fps`.
"""

from typing import Optional, Tuple

import tensorflow as tf


def window_offsets(
    num_stored: tf.Tensor, span: int, num_windows: int = 1, seed: Optional[tf.Tensor] = None
) -> tf.Tensor:
    """First stored frame of each temporal window; int32 (num_windows,).

    A window covers `span = num_frames * stride` stored frames. With a seed: one uniformly random
    offset (training). Without: `num_windows` evenly spaced offsets from the start to the end
    (a single window is central).
    """
    max_offset = tf.maximum(tf.cast(num_stored, tf.int32) - span, 0)
    if seed is not None:
        return tf.random.stateless_uniform(
            [1], seed, minval=0, maxval=max_offset + 1, dtype=tf.int32
        )
    if num_windows == 1:
        return tf.reshape(max_offset // 2, [1])
    positions = tf.linspace(0.0, tf.cast(max_offset, tf.float32), num_windows)
    return tf.cast(tf.round(positions), tf.int32)


def frame_indices(
    offsets: tf.Tensor, num_frames: int, stride: int, num_stored: tf.Tensor
) -> tf.Tensor:
    """Stored-frame indices of each window, int32 (W, num_frames); short videos repeat the last."""
    idx = offsets[:, None] + tf.range(num_frames, dtype=tf.int32)[None, :] * stride
    return tf.minimum(idx, tf.cast(num_stored, tf.int32) - 1)


def crop_box(
    image_shape: tf.Tensor,
    crop_size: int,
    min_resize: int,
    scale_jitter: Optional[Tuple[float, float]] = None,
    seed: Optional[tf.Tensor] = None,
) -> tf.Tensor:
    """Square crop [y, x, side, side] in stored-frame pixels, int32 (4,).

    Equivalent to "resize the short side to `min_resize * z`, then crop `crop_size`", with the zoom
    `z ~ U(scale_jitter)` in training (z = 1 in evaluation), but cropping first so only the crop is
    resized. The zoom never asks for more than the whole short side. Random position with a seed,
    central without.
    """
    height, width = image_shape[0], image_shape[1]
    short = tf.cast(tf.minimum(height, width), tf.float32)
    zoom = 1.0
    if seed is not None and scale_jitter is not None:
        seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        zoom = tf.random.stateless_uniform([], seed, scale_jitter[0], scale_jitter[1])
    side = tf.cast(tf.round(short * (crop_size / min_resize) / zoom), tf.int32)
    side = tf.clip_by_value(side, 1, tf.minimum(height, width))
    if seed is None:
        y, x = (height - side) // 2, (width - side) // 2
    else:
        pos_seed = pos_seed if scale_jitter is not None else seed
        u = tf.random.stateless_uniform([2], pos_seed)
        y = tf.cast(tf.floor(u[0] * tf.cast(height - side + 1, tf.float32)), tf.int32)
        x = tf.cast(tf.floor(u[1] * tf.cast(width - side + 1, tf.float32)), tf.int32)
        y, x = tf.minimum(y, height - side), tf.minimum(x, width - side)
    return tf.stack([y, x, side, side])


def decode_crop_frames(jpegs: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    """string (M,) JPEGs -> uint8 (M, side, side, 3), decoding only the crop window."""
    return tf.map_fn(
        lambda jpeg: tf.image.decode_and_crop_jpeg(jpeg, box, channels=3),
        jpegs,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )


def resize_frames(frames: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 (..., h, w, 3) -> float32 (..., size, size, 3) in [0, 1]."""
    frames = tf.image.convert_image_dtype(frames, tf.float32)
    shape = tf.shape(frames)
    flat = tf.reshape(frames, tf.concat([[-1], shape[-3:]], 0))
    flat = tf.image.resize(flat, [size, size], method="bilinear", antialias=False)
    return tf.reshape(flat, tf.concat([shape[:-3], [size, size, 3]], 0))


def flip_and_color(
    video: tf.Tensor,
    seed: tf.Tensor,
    flip: bool,
    brightness: float,
    contrast: float,
    saturation: float,
) -> tf.Tensor:
    """The same random flip and colour jitter for every frame of a (T, H, W, 3) clip in [0, 1]."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if flip:
        do_flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
        video = tf.cond(do_flip, lambda: tf.reverse(video, axis=[-2]), lambda: video)
    if brightness > 0:
        video = video + tf.random.stateless_uniform([], seeds[1], -brightness, brightness)
    if contrast > 0:
        factor = tf.random.stateless_uniform([], seeds[2], 1.0 - contrast, 1.0 + contrast)
        mean = tf.reduce_mean(video, axis=[-3, -2], keepdims=True)
        video = (video - mean) * factor + mean
    if saturation > 0:
        factor = tf.random.stateless_uniform([], seeds[3], 1.0 - saturation, 1.0 + saturation)
        gray = tf.image.rgb_to_grayscale(tf.clip_by_value(video, 0.0, 1.0))
        video = (video - gray) * factor + gray
    return tf.clip_by_value(video, 0.0, 1.0)


def to_symmetric(video: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> [-1, 1]."""
    return video * 2.0 - 1.0


def audio_window(audio: tf.Tensor, start: tf.Tensor, length: int) -> tf.Tensor:
    """audio[start:start + length], zero-padded at the end to exactly `length` samples."""
    piece = audio[start : start + length]
    piece = tf.pad(piece, [[0, length - tf.shape(piece)[0]]])
    return tf.ensure_shape(piece, [length])
