"""Video and audio pre-processing: clip windows, crops, flips, colour jitter, audio windows
and noise (VATT's pre-training recipe; docs/data.md).

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
    jitter_prob: float = 1.0,
) -> tf.Tensor:
    """Crop [y, x, height, width] in stored-frame pixels, int32 (4,).

    VATT's recipe (DMVR's scale jitter, then "resize the short side to `min_resize`, crop
    `crop_size`"), cropping first so only the crop is resized: in training, with probability
    `jitter_prob`, the height and width are scaled by independent factors ~ U(scale_jitter)
    before the short side is resized, so the crop covers a box of aspect ratio s_w / s_h of
    the stored frame (scale jitter followed by a fixed short side changes the aspect ratio,
    not the zoom). Without jitter (or in evaluation) the box is the square of side
    short * crop_size / min_resize. Random position with a seed, central without.
    """
    height, width = image_shape[0], image_shape[1]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    s_h = s_w = tf.constant(1.0)
    if seed is not None:
        seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if scale_jitter is not None:
            u = tf.random.stateless_uniform([3], seed)
            jittered = u[0] < jitter_prob
            low, high = scale_jitter
            s_h = tf.where(jittered, low + (high - low) * u[1], 1.0)
            s_w = tf.where(jittered, low + (high - low) * u[2], 1.0)
    short = tf.minimum(h * s_h, w * s_w)  # the short side after the jitter
    box = lambda scale, size: tf.clip_by_value(
        tf.cast(tf.round(crop_size * short / (min_resize * scale)), tf.int32), 1, size
    )
    box_h, box_w = box(s_h, height), box(s_w, width)
    if seed is None:
        y, x = (height - box_h) // 2, (width - box_w) // 2
    else:
        u = tf.random.stateless_uniform([2], pos_seed)
        y = tf.cast(tf.floor(u[0] * tf.cast(height - box_h + 1, tf.float32)), tf.int32)
        x = tf.cast(tf.floor(u[1] * tf.cast(width - box_w + 1, tf.float32)), tf.int32)
        y, x = tf.minimum(y, height - box_h), tf.minimum(x, width - box_w)
    return tf.stack([y, x, box_h, box_w])


def spatial_crops(box: tf.Tensor, image_shape: tf.Tensor, num_crops: int) -> tf.Tensor:
    """The test-time crops of an evaluation `box` (`crop_box` without a seed), int32 (C, 4).

    1: the central box. 3: VATT's three-crop testing (DMVR's `multi_crop_image`): the same box
    at the start, the centre and the end of the frame's long side (the height when the frame
    is square or portrait), centred on the short side, which it spans when `min_resize` equals
    `crop_size` (VATT's evaluation setting).
    """
    if num_crops == 1:
        return box[None]
    if num_crops != 3:
        raise ValueError(f"num_crops = {num_crops}: must be 1 or 3")
    y, x, box_h, box_w = tf.unstack(box)
    height, width = image_shape[0], image_shape[1]
    along = lambda size, side: tf.stack([0, (size - side) // 2, size - side])
    vertical = height >= width
    ys = tf.where(vertical, along(height, box_h), tf.fill([3], y))
    xs = tf.where(vertical, tf.fill([3], x), along(width, box_w))
    return tf.stack([ys, xs, tf.fill([3], box_h), tf.fill([3], box_w)], axis=1)


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
    hue: float = 0.0,
    color_prob: float = 1.0,
) -> tf.Tensor:
    """The same random flip and colour jitter for every frame of a (T, H, W, 3) clip in [0, 1].

    Colour jitter as VATT's (DMVR's default colour augmentation), with probability
    `color_prob`: brightness + U(-b, b), saturation x U(1 - s, 1 + s) (HSV), contrast
    x U(1 - c, 1 + c) about each frame's mean, hue + U(-hue, hue) (of the colour circle),
    in that order, then clipped to [0, 1]."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    if flip:
        do_flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
        video = tf.cond(do_flip, lambda: tf.reverse(video, axis=[-2]), lambda: video)

    def jitter(video):
        uniform = lambda s, low, high: tf.random.stateless_uniform([], s, low, high)
        if brightness > 0:
            video = tf.image.adjust_brightness(video, uniform(seeds[1], -brightness, brightness))
        if saturation > 0:
            factor = uniform(seeds[2], 1.0 - saturation, 1.0 + saturation)
            video = tf.image.adjust_saturation(video, factor)
        if contrast > 0:
            video = tf.image.adjust_contrast(
                video, uniform(seeds[3], 1.0 - contrast, 1.0 + contrast)
            )
        if hue > 0:
            video = tf.image.adjust_hue(video, uniform(seeds[4], -hue, hue))
        return tf.clip_by_value(video, 0.0, 1.0)

    if max(brightness, contrast, saturation, hue) > 0 and color_prob > 0:
        do_color = tf.random.stateless_uniform([], seeds[5]) < color_prob
        video = tf.cond(do_color, lambda: jitter(video), lambda: video)
    return tf.clip_by_value(video, 0.0, 1.0)


def add_audio_noise(audio: tf.Tensor, seed: tf.Tensor, gamma: float) -> tf.Tensor:
    """VATT's audio noise: + N(0, sigma^2) per sample with sigma = gamma * max|audio| (relative
    to the clip's peak, so a silent or missing waveform stays exactly zero)."""
    if gamma <= 0:
        return audio
    sigma = gamma * tf.reduce_max(tf.abs(audio))
    return audio + sigma * tf.random.stateless_normal(tf.shape(audio), seed)


def to_symmetric(video: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> [-1, 1]."""
    return video * 2.0 - 1.0


def audio_window(audio: tf.Tensor, start: tf.Tensor, length: int) -> tf.Tensor:
    """audio[start:start + length], zero-padded at the end to exactly `length` samples."""
    piece = audio[start : start + length]
    piece = tf.pad(piece, [[0, length - tf.shape(piece)[0]]])
    return tf.ensure_shape(piece, [length])
