"""One source's clips, for both paths: read from a position -> shuffle blocks -> number ->
decode -> check -> finish (augment, tokenise).

    ds = source_clips(files, spec, errors, cycle_length=8, shuffle_buffer=1024, repeat=True,
                      seed=(0, 0), start=SourcePosition(), counts=ShardCounts(), source="...")
    ds = finished(ds, spec, tokenizer, num_captions=5, color=(True, 0.1, 0.4, 0.4))

The number of a clip in its source's stream seeds every random choice made for it, so a stream
is a pure function of (files, seed, position). The evaluation path is the same stream at
position 0, unshuffled (`shuffle_buffer` 0, `shuffle_files` False, no repeat).
"""

import functools
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from vatt_gh.data import augment
from vatt_gh.data import text as text_lib
from vatt_gh.data.configs import MAX_BAD_IN_A_ROW, ClipSpec
from vatt_gh.data.decode import check, guarded
from vatt_gh.data.position import SourcePosition, source_seed
from vatt_gh.data.read import ShardCounts, read_records
from vatt_gh.data.rejects import OK, DataErrors

AUTOTUNE = tf.data.AUTOTUNE


def source_clips(
    files: Sequence[str],
    spec: ClipSpec,
    errors: DataErrors,
    *,
    cycle_length: int,
    shuffle_buffer: int,
    repeat: bool,
    seed: Tuple[int, int],
    start: SourcePosition,
    counts: ShardCounts,
    source: str,
    max_bad_in_a_row: int = MAX_BAD_IN_A_ROW,
    shuffle_files: bool = True,
) -> tf.data.Dataset:
    """read from `start` -> shuffle blocks -> number -> decode -> check, for one source.

    Stops with NoValidRecordsError when `max_bad_in_a_row` records in a row were rejected, or
    when every shard in a row came out empty or corrupt at its first record (`source` names it).
    """
    check_fn = functools.partial(
        check, errors=errors, spec=spec, source=source, max_bad_in_a_row=max_bad_in_a_row
    )
    op_seed = source_seed(seed)
    block = max(1, shuffle_buffer)
    fill = repeat and block > 1
    base_seed = tf.constant(seed, tf.int64)
    records = read_records(
        files,
        errors,
        cycle_length=cycle_length,
        repeat=repeat,
        op_seed=op_seed,
        start=start,
        counts=counts,
        source=source,
        shuffle_files=shuffle_files,
    )

    def decoded(numbered: tf.data.Dataset) -> tf.data.Dataset:
        return numbered.interleave(
            lambda i, r, s, x: guarded(i, r, s, x, spec, base_seed),
            cycle_length=4,
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )

    def one_block(number, block_records):
        serialized, shard, index = block_records
        size = tf.size(serialized, out_type=tf.int64)
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(size), seed=tf.stack([tf.constant(op_seed, tf.int64), number])
        )
        block_clips = decoded(
            tf.data.Dataset.from_tensor_slices(
                (
                    number * block + tf.range(size),
                    tf.gather(serialized, perm),
                    tf.gather(shard, perm),
                    tf.gather(index, perm),
                )
            )
        )
        checked = block_clips.filter(check_fn)
        if not fill:
            return checked
        # Rejected records' places go to the block's first good records (decoded again).
        spare = block_clips.filter(lambda ex: ex["reason"] == OK).repeat()
        return checked.concatenate(spare).take(size)

    if block == 1:  # blocks of one record are unshuffled: number the stream as it is read
        numbered = records.enumerate(start.block_start).map(lambda i, rec: (i, *rec))
        clips = decoded(numbered).filter(check_fn)
    else:
        blocks = tf.data.Dataset.zip(
            (tf.data.Dataset.counter(start.block_start // block), records.batch(block))
        )
        clips = blocks.flat_map(one_block)
    return clips.skip(start.records - start.block_start)


def select_captions(captions: tf.Tensor, k: int, seed: Optional[tf.Tensor]):
    """K consecutive narrations (random window with a seed, central without), padded with ''.

    Returns (string (K,), float32 mask (K,)).
    """
    count = tf.size(captions)
    max_start = tf.maximum(count - k, 0)
    if seed is None:
        start = max_start // 2
    else:
        start = tf.random.stateless_uniform(
            [], seed, minval=0, maxval=max_start + 1, dtype=tf.int32
        )
    chosen = captions[start : start + k]
    real = tf.size(chosen)
    chosen = tf.pad(chosen, [[0, k - real]], constant_values="")
    mask = tf.cast(tf.range(k) < real, tf.float32)
    return tf.ensure_shape(chosen, [k]), mask


def finish(
    example: dict,
    spec: ClipSpec,
    tokenizer: text_lib.Tokenizer,
    num_captions: int,
    color: Optional[Tuple[bool, float, float, float, float, float]],
    keep_strings: bool,
    audio_noise: float = 0.0,
) -> dict:
    """augment: frames -> [-1, 1] clip(s), narrations -> token ids + mask; drops bookkeeping."""
    aug_seed, caption_seed = tf.unstack(tf.random.experimental.stateless_split(example["seed"], 2))
    if spec.audio_only:  # an empty placeholder: no frames
        video = tf.zeros([spec.num_views, 0, spec.crop_size, spec.crop_size, 3], tf.float32)
    else:
        video = augment.resize_frames(example["frames"], spec.crop_size)  # (W, T, H, W, 3)
    if spec.training:
        video = video[0]  # (T, H, W, 3)
        if color is not None:
            video = augment.flip_and_color(video, aug_seed, *color)
        audio = example["audio"][0]  # (S,)
        noise_seed = tf.random.experimental.stateless_fold_in(aug_seed, 1)
        audio = augment.add_audio_noise(audio, noise_seed, audio_noise)
    else:
        audio = example["audio"]  # (W, S)
    video = augment.to_symmetric(video)
    size = [0 if spec.audio_only else spec.num_frames, spec.crop_size, spec.crop_size, 3]
    video = tf.ensure_shape(video, size if spec.training else [spec.num_views] + size)
    captions, text_mask = select_captions(
        example["captions"], num_captions, caption_seed if spec.training else None
    )
    out = {
        "video": video,
        "audio": audio,
        "text": tokenizer(captions),  # (K, L)
        "audio_mask": tf.cast(example["has_audio"], tf.float32),
        "text_mask": text_mask,  # (K,)
        "label": example["label"],
        "aligned_va": example["aligned_va"],
        "aligned_vt": example["aligned_vt"],
    }
    if keep_strings:
        out["clip_id"] = example["clip_id"]
    return out


# ---------------------------------------------------------------------------------------------


def finished(
    clips: tf.data.Dataset,
    spec: ClipSpec,
    tokenizer: text_lib.Tokenizer,
    num_captions: int,
    color: Optional[Tuple[bool, float, float, float, float, float]] = None,
    keep_strings: bool = False,
    audio_noise: float = 0.0,
) -> tf.data.Dataset:
    """`finish` mapped over a source's clips (parallel, order kept)."""
    return clips.map(
        functools.partial(
            finish,
            spec=spec,
            tokenizer=tokenizer,
            num_captions=num_captions,
            color=color,
            keep_strings=keep_strings,
            audio_noise=audio_noise,
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
