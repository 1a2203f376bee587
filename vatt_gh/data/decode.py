"""Decode one record: parse, validate, pick the window(s), decode only the crop; explain a rejection.

    clip = decode(serialized, seed, spec)      # a dict; clip["reason"] is OK or a rejects code
    ds.interleave(lambda i, r, s, x: guarded(i, r, s, x, spec, base_seed)).filter(check_fn)

Nothing is decoded unless every check passes (a JPEG header claiming too many pixels is caught
from the header alone). `guarded` turns an op error into a reason=UNDECODABLE element; `check`
is the filter predicate that reports rejected records to `DataErrors` (raise, or skip and count)
and `explain` re-reads a rejected record eagerly for the detail of its log line.
"""

import numpy as np
import tensorflow as tf

from vatt_gh.data import augment, schema
from vatt_gh.data.configs import ClipSpec
from vatt_gh.data.rejects import (
    BAD_AUDIO,
    BAD_FLAG,
    EMPTY_CAPTION,
    FRAME_TOO_LARGE,
    NO_AUDIO,
    NO_VIDEO,
    NOT_JPEG,
    OK,
    SHORT_AUDIO,
    UNDECODABLE,
    BadRecordError,
    DataErrors,
    NoValidRecordsError,
    fail_in_graph,
)


def _empty_clip(spec: ClipSpec, reason: int) -> dict:
    w = spec.num_views
    return {
        "frames": tf.zeros([w, spec.num_frames, 0, 0, 3], tf.uint8),
        "audio": tf.zeros([w, spec.audio_samples], tf.float32),
        "has_audio": tf.constant(False),
        "captions": tf.zeros([0], tf.string),
        "label": tf.constant(-1, tf.int32),
        "aligned_va": tf.constant(1.0),
        "aligned_vt": tf.constant(1.0),
        "clip_id": tf.constant(""),
        "reason": tf.constant(reason, tf.int32),
    }


_BLANK = r"[\s\p{Z}\p{Cc}]*"  # whitespace (ASCII and Unicode), NUL and other control characters


def _frame_pixels(frames: tf.Tensor) -> tf.Tensor:
    """int64 (F,): height x width that each JPEG header claims (read without decoding)."""
    shapes = tf.map_fn(
        lambda jpeg: tf.image.extract_jpeg_shape(jpeg)[:2],
        frames,
        fn_output_signature=tf.TensorSpec([2], tf.int32),
    )
    shapes = tf.cast(tf.reshape(shapes, [-1, 2]), tf.int64)
    return shapes[:, 0] * shapes[:, 1]


def decode(serialized: tf.Tensor, seed: tf.Tensor, spec: ClipSpec) -> dict:
    """Parses and validates one record and decodes the frames and audio of its window(s).

    Nothing is decoded unless every check passes: a JPEG header claiming more than
    `max_frame_pixels` (a decompression bomb) is caught from the header alone.
    """
    parsed = schema.parse_sequence_example(serialized)
    num_stored = tf.size(parsed["frames"])
    audio = parsed["audio"]
    audio_len = tf.size(audio)
    per_frame = spec.sample_rate / spec.fps
    if spec.audio_only:  # the frames the waveform's duration would hold at `fps`
        num_stored = tf.cast(tf.math.ceil(tf.cast(audio_len, tf.float32) / per_frame), tf.int32)
    window_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    span = spec.num_frames * spec.stride
    offsets = augment.window_offsets(
        num_stored, span, spec.num_windows, window_seed if spec.training else None
    )  # (W,)
    # Audio window: the frames' time span, or `audio_samples` centred on it.
    frames_samples = int(round(span * per_frame))
    shift = (frames_samples - spec.audio_samples) // 2
    starts = tf.cast(tf.round(tf.cast(offsets, tf.float32) * per_frame), tf.int32) + shift
    starts = tf.maximum(starts, 0)
    video_end = tf.cast(tf.round(tf.cast(num_stored, tf.float32) * per_frame), tf.int32)
    needed = tf.reduce_max(tf.minimum(starts + spec.audio_samples, video_end))
    has_audio = audio_len > 0
    empty_caption = tf.reduce_any(tf.strings.regex_full_match(parsed["captions"], _BLANK))
    bad_audio = tf.logical_not(
        tf.reduce_all(tf.abs(audio) <= spec.max_audio_amplitude)  # False for NaN as well
    )
    flags = tf.stack([parsed["aligned_va"], parsed["aligned_vt"]])
    bad_flag = tf.reduce_any((flags != 0) & (flags != 1)) | tf.reduce_any(parsed["labels"] < 0)
    # Headers are read only when every frame starts like a JPEG (libjpeg would print a line
    # for each one that does not).
    not_jpeg = tf.reduce_any(tf.strings.substr(parsed["frames"], 0, 3) != b"\xff\xd8\xff")
    too_large = tf.cond(
        not_jpeg,
        lambda: tf.constant(False),
        lambda: tf.reduce_any(_frame_pixels(parsed["frames"]) > spec.max_frame_pixels),
    )

    reason = tf.constant(OK, tf.int32)
    reason = tf.where(has_audio & (audio_len < needed - spec.audio_tolerance), SHORT_AUDIO, reason)
    reason = tf.where(bad_audio, BAD_AUDIO, reason)
    reason = tf.where(empty_caption, EMPTY_CAPTION, reason)
    reason = tf.where(bad_flag, BAD_FLAG, reason)
    reason = tf.where(too_large, FRAME_TOO_LARGE, reason)
    reason = tf.where(not_jpeg, NOT_JPEG, reason)
    reason = tf.where(num_stored == 0, NO_AUDIO if spec.audio_only else NO_VIDEO, reason)

    def decode_branch():
        if spec.audio_only:
            frames = tf.zeros([spec.num_views, spec.num_frames, 0, 0, 3], tf.uint8)
            return frames, cut_audio()
        image_shape = tf.image.extract_jpeg_shape(parsed["frames"][0])
        box = augment.crop_box(
            image_shape,
            spec.crop_size,
            spec.min_resize,
            spec.scale_jitter,
            crop_seed if spec.training else None,
            spec.scale_jitter_prob,
        )
        idx = augment.frame_indices(offsets, spec.num_frames, spec.stride, num_stored)  # (W, T)
        jpegs = tf.gather(parsed["frames"], tf.reshape(idx, [-1]))
        shape = [spec.num_windows, spec.num_frames, box[2], box[3], 3]
        crops = [  # (W, T, h, w, 3) each; views window-major: window i, crop c -> i * C + c
            tf.reshape(augment.decode_crop_frames(jpegs, crop), shape)
            for crop in tf.unstack(augment.spatial_crops(box, image_shape, spec.num_crops))
        ]
        frames = tf.reshape(tf.stack(crops, axis=1), [spec.num_views, *shape[1:]])
        return frames, tf.repeat(cut_audio(), spec.num_crops, axis=0)

    def cut_audio():
        padded = tf.pad(audio, [[0, spec.audio_samples]])
        starts_in = tf.minimum(starts, audio_len)
        cut = tf.gather(padded, starts_in[:, None] + tf.range(spec.audio_samples)[None, :])
        return tf.where(has_audio, cut, tf.zeros_like(cut))

    def skip_branch():
        return (
            tf.zeros([spec.num_views, spec.num_frames, 0, 0, 3], tf.uint8),
            tf.zeros([spec.num_views, spec.audio_samples], tf.float32),
        )

    frames, audio_cut = tf.cond(reason == OK, decode_branch, skip_branch)
    labels = tf.cast(parsed["labels"], tf.int32)
    return {
        "frames": tf.ensure_shape(frames, [spec.num_views, spec.num_frames, None, None, 3]),
        "audio": tf.ensure_shape(audio_cut, [spec.num_views, spec.audio_samples]),
        "has_audio": has_audio,
        "captions": parsed["captions"],
        "label": tf.cond(tf.size(labels) > 0, lambda: labels[0], lambda: tf.constant(-1)),
        "aligned_va": tf.cast(parsed["aligned_va"], tf.float32),
        "aligned_vt": tf.cast(parsed["aligned_vt"], tf.float32),
        "clip_id": parsed["clip_id"],
        "reason": reason,
    }


def explain(serialized: bytes, seed, reason: int, spec: ClipSpec) -> str:
    """The detail of a rejected record (re-read eagerly, only when a line is written)."""
    try:
        parsed = schema.parse_sequence_example(tf.constant(serialized))
        if reason == UNDECODABLE:
            decode(tf.constant(serialized), tf.constant(seed, tf.int64), spec)
            return ""
        if reason == FRAME_TOO_LARGE:
            pixels = _frame_pixels(parsed["frames"]).numpy()
            i = int((pixels > spec.max_frame_pixels).argmax())
            h, w = tf.image.extract_jpeg_shape(parsed["frames"][i]).numpy()[:2]
            return f"frame {i} claims {h} x {w} (limit max_frame_pixels={spec.max_frame_pixels})"
        if reason == BAD_AUDIO:
            audio = parsed["audio"].numpy()
            i = int((~(np.abs(audio) <= spec.max_audio_amplitude)).argmax())
            return (
                f"sample {i} of {audio.size} is {audio[i]!r} "
                f"(limit |value| <= max_audio_amplitude={spec.max_audio_amplitude:g})"
            )
        if reason == BAD_FLAG:
            return (
                f"aligned_va={int(parsed['aligned_va'])}, aligned_vt={int(parsed['aligned_vt'])}, "
                f"labels={parsed['labels'].numpy().tolist()[:8]}"
            )
        if reason == EMPTY_CAPTION:
            captions = parsed["captions"].numpy()
            blank = tf.strings.regex_full_match(captions, _BLANK).numpy()
            return f"caption {int(blank.argmax())} is {captions[blank.argmax()][:20]!r}"
        if reason == NOT_JPEG:
            starts = tf.strings.substr(parsed["frames"], 0, 3).numpy()
            i = [s == b"\xff\xd8\xff" for s in starts].index(False)
            return f"frame {i} starts with {parsed['frames'][i].numpy()[:8]!r}"
        if reason == SHORT_AUDIO:
            return f"{int(tf.size(parsed['audio']))} samples stored"
    except tf.errors.OpError as e:
        return e.message.splitlines()[0][:300]
    return ""


def guarded(element_index, record, shard, record_index, spec: ClipSpec, base_seed):
    """Runs `decode` on one record; an op error becomes a reason=UNDECODABLE element."""
    seed = tf.random.experimental.stateless_fold_in(base_seed, element_index)
    good = (
        tf.data.Dataset.from_tensors((record, seed))
        .map(lambda r, s: decode(r, s, spec))
        .ignore_errors(log_warning=False)  # reported (and explained) by `check`
    )
    bad = tf.data.Dataset.from_tensors(_empty_clip(spec, UNDECODABLE))
    extra = {
        "shard": shard,
        "record_index": record_index,
        "seed": seed,
        "record": record,
        "position": element_index,  # in the source's stream: rejected records in a row are
    }  # consecutive positions (DataErrors.rejected_in_a_row), across shuffle blocks too
    return good.concatenate(bad).take(1).map(lambda ex: {**ex, **extra})


def check(
    example: dict, errors: DataErrors, spec: ClipSpec, source: str, max_bad_in_a_row: int
) -> tf.Tensor:
    """Filter predicate: True for valid records; reports the others (may fail the pipeline)."""

    def report(shard, index, reason, record, seed, position):
        shard, index, reason = shard.numpy().decode("utf-8"), int(index), int(reason)
        try:
            errors.report(
                shard,
                index,
                reason,
                lambda: explain(record.numpy(), seed.numpy(), reason, spec),
            )
            bad_in_a_row = errors.rejected_in_a_row(source, int(position))
            if bad_in_a_row >= max_bad_in_a_row:
                errors.give_up(source, bad_in_a_row, shard, index, reason)
        except (BadRecordError, NoValidRecordsError) as e:
            return str(e)
        return ""

    def rejected():
        args = ("shard", "record_index", "reason", "record", "seed", "position")
        message = tf.py_function(report, [example[k] for k in args], Tout=tf.string)
        with tf.control_dependencies([fail_in_graph(message)]):
            return tf.constant(False)

    return tf.cond(example["reason"] == OK, lambda: tf.constant(True), rejected)
