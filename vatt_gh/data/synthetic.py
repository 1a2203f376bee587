"""Synthetic video-audio-text triplets with known (mis)alignment, written through `schema`.

Each clip has a latent class `c`:
- video: a shape of the class's colour and kind (square, disc, horizontal or vertical bar) moving
  across a dark noisy background;
- audio: a tone at the class's frequency `200 + 150 c` Hz (48 kHz, the clip's whole duration);
- text: `num_captions` narrations, each with one of the class's two words among filler words.
A chosen fraction of clips is misaligned, cycling through `misalign_kinds` (MISALIGN_KINDS):
- class swaps (`swap_audio`, `swap_text`, `swap_both`): audio, text or both from another class;
- what HowTo100M's noise looks like: `shift_text`, the narration of the neighbouring clip (the
  next clip in file order whose class differs: narration out of step with the picture);
  `offscreen_text`, narration about nothing visible (filler plus OFFSCREEN_WORDS, which name no
  class: "subscribe to the channel"); `silent_audio` (the noise floor only); `unrelated_audio`
  (broadband noise, no class's tone); `shift_text+unrelated_audio` (both pairs wrong).
The record stores the ground truth: `clip/label/index` = [video class], `synthetic/aligned_va`,
`synthetic/aligned_vt` (1 = aligned), `synthetic/audio_class`, `synthetic/text_class` (-1: no
class), `synthetic/misalign_kind` (index into MISALIGN_KINDS, 0 = aligned; `read_truth` reads
and validates it). Everything is a function of (seed, clip index), so the set is reproducible.
"""

import colorsys
import json
import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from vatt_gh.data import schema
from vatt_gh.data import text as text_lib

_CLASS_WORDS = (
    "guitar piano drum violin river ocean forest desert bread pasta salad soup engine wheel "
    "hammer drill garden flower tree grass kitten puppy horse bird snow rain storm wind "
    "paint brush canvas pencil"
).split()
FILLER_WORDS = (
    "the a and then we now you it is with of to this just so here some very little "
    "nice okay going make take look"
).split()
# Narration about nothing on screen (appended to the vocabulary, so class word ids do not move).
OFFSCREEN_WORDS = "subscribe channel welcome guys today comment music sponsor".split()
SHAPES = ("square", "disc", "hbar", "vbar")

# Misalignment kinds: name -> (audio wrong, text wrong). The index is the record's code.
MISALIGN_KIND_KEY = "synthetic/misalign_kind"
MISALIGN_KINDS = {
    "aligned": (False, False),
    "swap_audio": (True, False),
    "swap_text": (False, True),
    "swap_both": (True, True),
    "shift_text": (False, True),
    "offscreen_text": (False, True),
    "silent_audio": (True, False),
    "unrelated_audio": (True, False),
    "shift_text+unrelated_audio": (True, True),
}
KIND_NAMES = tuple(MISALIGN_KINDS)
SWAP_KINDS = ("swap_audio", "swap_text", "swap_both")  # the default: class swaps only
HOWTO_KINDS = KIND_NAMES[1:]  # every kind, swaps and the HowTo100M-like ones


def kind_modality(kind: str) -> str:
    """'aligned', 'audio' (only the audio is wrong), 'text' or 'both'."""
    audio, text = MISALIGN_KINDS[kind]
    return {(False, False): "aligned", (True, False): "audio", (False, True): "text"}.get(
        (audio, text), "both"
    )


def check_kinds(kinds) -> tuple:
    """The misalignment kinds as a tuple of names, or a one-line ValueError naming the bad one."""
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError("misalign_kinds is empty: name at least one of " + ", ".join(HOWTO_KINDS))
    for kind in kinds:
        if kind not in HOWTO_KINDS:
            raise ValueError(f"misalign kind {kind!r}: choose from " + ", ".join(HOWTO_KINDS))
    return kinds


# The demo set: what `make demo` pre-trains on (gin/demo.gin takes provision.SyntheticData's
# defaults, which are these) and `tools/make_synthetic.py --preset=demo` writes. The demo crops
# 8 x 32 x 32 of its 16 frames of 40 x 40 and reads 0.8 s of audio. Sizes are written here only.
DEMO = dict(
    num_clips=512,
    num_classes=8,
    misaligned_fraction=0.25,
    num_frames=16,
    frame_size=40,
    num_captions=5,
    words_per_caption=2,  # one names the class: six-word narrations take VATT >> 600 steps
    num_shards=4,
)
SMALL = dict(DEMO, num_clips=256)


def class_words(c: int) -> List[str]:
    """The two words that name class `c` in narrations."""
    if 2 * c + 1 < len(_CLASS_WORDS):
        return [_CLASS_WORDS[2 * c], _CLASS_WORDS[2 * c + 1]]
    return [f"thing{c}a", f"thing{c}b"]


def class_frequency(c: int) -> float:
    return 200.0 + 150.0 * c


def class_color(c: int, num_classes: int) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(c / num_classes, 0.9, 1.0)) * 255.0


def render_frames(
    c: int, num_classes: int, rng: np.random.Generator, num_frames: int, size: int
) -> np.ndarray:
    """uint8 (T, size, size, 3): the class's shape moving in a straight line."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size / 5.0
    start = rng.uniform(r, size - r, 2)
    velocity = rng.uniform(-1.0, 1.0, 2) * (size - 2 * r) / max(num_frames, 1)
    color = class_color(c, num_classes)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        cy, cx = np.clip(start + velocity * t, r, size - r)
        kind = SHAPES[c % len(SHAPES)]
        if kind == "square":
            inside = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
        elif kind == "disc":
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < (1.2 * r) ** 2
        elif kind == "hbar":
            inside = (np.abs(yy - cy) < r / 2) & (np.abs(xx - cx) < 2 * r)
        else:
            inside = (np.abs(yy - cy) < 2 * r) & (np.abs(xx - cx) < r / 2)
        image = 30.0 + rng.normal(0.0, 6.0, (size, size, 1))
        image = np.where(inside[..., None], color[None, None, :], image)
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def render_audio(
    c: int, rng: np.random.Generator, seconds: float, sample_rate: int = schema.SAMPLE_RATE
) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    tone = 0.5 * np.sin(2 * np.pi * class_frequency(c) * t + rng.uniform(0, 2 * np.pi))
    return (tone + rng.normal(0.0, 0.01, t.shape)).astype(np.float32)


def render_captions(
    c: int, rng: np.random.Generator, num_captions: int, words_per_caption: int
) -> List[str]:
    """Narrations naming class `c` (c = -1: naming nothing visible, OFFSCREEN_WORDS)."""
    keywords = class_words(c) if c >= 0 else OFFSCREEN_WORDS
    captions = []
    for _ in range(num_captions):
        words = list(rng.choice(FILLER_WORDS, words_per_caption - 1))
        words.insert(int(rng.integers(0, words_per_caption)), rng.choice(keywords))
        captions.append(" ".join(words))
    return captions


def vocabulary(num_classes: int) -> List[str]:
    words = list(FILLER_WORDS)
    for c in range(num_classes):
        words.extend(class_words(c))
    return words + OFFSCREEN_WORDS


def _class_of(seed: int, i: int, num_classes: int) -> int:
    """Clip i's video class (the first draw of its generator)."""
    return int(np.random.default_rng([seed, 1, i]).integers(num_classes))


def _neighbour(seed: int, i: int, num_clips: int, num_classes: int) -> int:
    """The next clip after i (file order, wrapping) whose video class differs from clip i's."""
    c = _class_of(seed, i, num_classes)
    for step in range(1, num_clips):
        j = (i + step) % num_clips
        if _class_of(seed, j, num_classes) != c:
            return j
    raise ValueError(f"shift_text needs two classes among the {num_clips} clips; all are class {c}")


def _own_captions(seed, j, num_classes, num_frames, frame_size, seconds, n, w) -> List[str]:
    """Clip j's narration as written for j when aligned (its generator replayed)."""
    r = np.random.default_rng([seed, 1, j])
    c = int(r.integers(num_classes))
    r.integers(1, max(num_classes, 2))
    render_frames(c, num_classes, r, num_frames, frame_size)
    render_audio(c, r, seconds)
    return render_captions(c, r, n, w)


def read_truth(file_pattern: str) -> Dict[str, dict]:
    """{clip_id: ground truth} read from the records themselves: label, aligned_va, aligned_vt,
    audio_class, text_class and misalign_kind (a name; an unknown code is a one-line ValueError
    naming the file and the clip)."""
    truth = {}
    keys = {
        "label": schema.LABEL,
        "aligned_va": schema.ALIGNED_VA,
        "aligned_vt": schema.ALIGNED_VT,
        "audio_class": schema.AUDIO_CLASS,
        "text_class": schema.TEXT_CLASS,
        "misalign_kind": MISALIGN_KIND_KEY,
    }
    paths = sorted(tf.io.gfile.glob(file_pattern))
    if not paths:
        raise ValueError(f"no records match {file_pattern!r}")
    for path in paths:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            context = tf.train.SequenceExample.FromString(record).context.feature
            clip_id = context[schema.CLIP_ID].bytes_list.value[0].decode("utf-8")
            row = {}
            for name, key in keys.items():
                values = context[key].int64_list.value if key in context else []
                if len(values) != 1:
                    raise ValueError(f"{path}: clip {clip_id!r} has no single {key!r}")
                row[name] = int(values[0])
            code = row["misalign_kind"]
            if not 0 <= code < len(KIND_NAMES):
                raise ValueError(
                    f"{path}: clip {clip_id!r} has {MISALIGN_KIND_KEY}={code}, "
                    f"not a code of 0..{len(KIND_NAMES) - 1}"
                )
            row["misalign_kind"] = KIND_NAMES[code]
            truth[clip_id] = row
    return truth


def write_synthetic(
    out_dir: str,
    num_clips: int = 256,
    num_classes: int = 8,
    misaligned_fraction: float = 0.25,
    seed: int = 0,
    num_frames: int = 16,
    frame_size: int = 40,
    fps: float = 10.0,
    num_captions: int = 5,
    words_per_caption: int = 6,
    num_shards: int = 4,
    prefix: str = "synthetic",
    misalign_kinds: Sequence[str] = SWAP_KINDS,
) -> Dict[str, object]:
    """Writes the set; returns dict(file_pattern, files, vocab_path, metadata_path, clips).

    Exactly `round(misaligned_fraction * num_clips)` clips are misaligned, cycling through
    `misalign_kinds` (names of MISALIGN_KINDS). `clips` lists each clip's ground truth (also in
    metadata.json and in the records).
    """
    if num_classes < 2 and misaligned_fraction > 0:
        raise ValueError("misaligned clips need at least two classes")
    if not (np.isfinite(misaligned_fraction) and 0.0 <= misaligned_fraction <= 1.0):
        raise ValueError(f"misaligned_fraction {misaligned_fraction!r} must lie in [0, 1]")
    misalign_kinds = check_kinds(misalign_kinds)
    tf.io.gfile.makedirs(out_dir)
    rng = np.random.default_rng([seed, 0])
    order = rng.permutation(num_clips)
    num_bad = int(round(misaligned_fraction * num_clips))
    n_kinds = len(misalign_kinds)
    kinds = {int(i): misalign_kinds[j % n_kinds] for j, i in enumerate(order[:num_bad])}
    seconds = num_frames / fps
    chunk = int(round(schema.SAMPLE_RATE / fps))
    clips, files = [], []
    per_shard = -(-num_clips // num_shards)
    for shard in range(num_shards):
        path = os.path.join(out_dir, f"{prefix}-{shard:05d}-of-{num_shards:05d}.tfrecord")
        examples = []
        for i in range(shard * per_shard, min((shard + 1) * per_shard, num_clips)):
            r = np.random.default_rng([seed, 1, i])
            c = int(r.integers(num_classes))
            other = (c + int(r.integers(1, max(num_classes, 2)))) % num_classes
            kind = kinds.get(i, "aligned")
            swap = kind.startswith("swap_")
            audio_class, text_class = c, c
            if MISALIGN_KINDS[kind][0]:
                audio_class = other if swap else -1
            if MISALIGN_KINDS[kind][1]:
                text_class = other if swap else -1
            frames = render_frames(c, num_classes, r, num_frames, frame_size)
            jpegs = [tf.io.encode_jpeg(f, quality=95).numpy() for f in frames]
            # The generator's draws are the same for every kind (the set stays comparable).
            audio = render_audio(max(audio_class, 0), r, seconds)
            captions = render_captions(text_class, r, num_captions, words_per_caption)
            if "silent_audio" in kind:  # the noise floor only
                audio = 0.01 * np.random.default_rng([seed, 3, i]).normal(size=audio.shape)
            elif "unrelated_audio" in kind:  # broadband noise, no class's tone
                audio = 0.3 * np.random.default_rng([seed, 3, i]).normal(size=audio.shape)
            if "shift_text" in kind:  # the neighbouring clip's narration
                j = _neighbour(seed, i, num_clips, num_classes)
                text_class = _class_of(seed, j, num_classes)
                captions = _own_captions(
                    seed,
                    j,
                    num_classes,
                    num_frames,
                    frame_size,
                    seconds,
                    num_captions,
                    words_per_caption,
                )
            truth = dict(
                clip_id=f"{prefix}_{i:06d}",
                label=c,
                audio_class=audio_class,
                text_class=text_class,
                aligned_va=int(audio_class == c),
                aligned_vt=int(text_class == c),
                misalign_kind=kind,
            )
            clips.append(truth)
            examples.append(
                schema.make_sequence_example(
                    truth["clip_id"],
                    jpegs,
                    audio.astype(np.float32),
                    captions,
                    [c],
                    audio_chunk=chunk,
                    extra_int_context={
                        schema.ALIGNED_VA: [truth["aligned_va"]],
                        schema.ALIGNED_VT: [truth["aligned_vt"]],
                        schema.AUDIO_CLASS: [audio_class],
                        schema.TEXT_CLASS: [text_class],
                        MISALIGN_KIND_KEY: [KIND_NAMES.index(kind)],
                    },
                )
            )
        schema.write_records(path, examples)
        files.append(path)
    vocab_path = os.path.join(out_dir, "vocab.txt")
    text_lib.write_word_vocab(vocab_path, vocabulary(num_classes))
    metadata_path = os.path.join(out_dir, "metadata.json")
    with tf.io.gfile.GFile(metadata_path, "w") as f:
        json.dump(
            dict(
                num_clips=num_clips,
                num_classes=num_classes,
                seed=seed,
                fps=fps,
                num_frames=num_frames,
                frame_size=frame_size,
                num_captions=num_captions,
                words_per_caption=words_per_caption,
                misaligned_fraction=misaligned_fraction,
                misalign_kinds=list(misalign_kinds),
                clips=clips,
            ),
            f,
        )
    return dict(
        file_pattern=os.path.join(out_dir, f"{prefix}-*-of-{num_shards:05d}.tfrecord"),
        files=files,
        vocab_path=vocab_path,
        metadata_path=metadata_path,
        clips=clips,
    )
