"""Synthetic video-audio-text triplets with known (mis)alignment, written through `schema`.

Each clip has a latent class `c`:
- video: a shape of the class's colour and kind (square, disc, horizontal or vertical bar) moving
  across a dark noisy background;
- audio: a tone at the class's frequency `200 + 150 c` Hz (48 kHz, the clip's whole duration);
- text: `num_captions` narrations, each with one of the class's two words among filler words.
A chosen fraction of clips is misaligned: their audio, their text or both come from another class.
The record stores the ground truth: `clip/label/index` = [video class], `synthetic/aligned_va`,
`synthetic/aligned_vt` (1 = aligned), `synthetic/audio_class`, `synthetic/text_class`.
Everything is a function of (seed, clip index), so the set is reproducible.
"""

import colorsys
import json
import os
from typing import Dict, List

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
SHAPES = ("square", "disc", "hbar", "vbar")

# The demo set: what `make demo` pre-trains on (gin/demo.gin takes loop.SyntheticData's defaults,
# which are these) and `tools/make_synthetic.py --preset=demo` writes. The demo crops 8 x 32 x 32
# of its 16 frames of 40 x 40 and reads 0.8 s of audio. Sizes are written here only.
DEMO = dict(
    num_clips=512,
    num_classes=8,
    misaligned_fraction=0.25,
    num_frames=16,
    frame_size=40,
    num_captions=5,
    words_per_caption=6,
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
    captions = []
    for _ in range(num_captions):
        words = list(rng.choice(FILLER_WORDS, words_per_caption - 1))
        words.insert(int(rng.integers(0, words_per_caption)), rng.choice(class_words(c)))
        captions.append(" ".join(words))
    return captions


def vocabulary(num_classes: int) -> List[str]:
    words = list(FILLER_WORDS)
    for c in range(num_classes):
        words.extend(class_words(c))
    return words


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
) -> Dict[str, object]:
    """Writes the set; returns dict(file_pattern, files, vocab_path, metadata_path, clips).

    Exactly `round(misaligned_fraction * num_clips)` clips are misaligned, cycling through the
    kinds audio, text, both. `clips` lists each clip's ground truth (also in metadata.json).
    """
    if num_classes < 2 and misaligned_fraction > 0:
        raise ValueError("misaligned clips need at least two classes")
    tf.io.gfile.makedirs(out_dir)
    rng = np.random.default_rng([seed, 0])
    order = rng.permutation(num_clips)
    num_bad = int(round(misaligned_fraction * num_clips))
    kinds = {int(i): ("audio", "text", "both")[j % 3] for j, i in enumerate(order[:num_bad])}
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
            kind = kinds.get(i, "")
            audio_class = other if kind in ("audio", "both") else c
            text_class = other if kind in ("text", "both") else c
            frames = render_frames(c, num_classes, r, num_frames, frame_size)
            jpegs = [tf.io.encode_jpeg(f, quality=95).numpy() for f in frames]
            truth = dict(
                clip_id=f"{prefix}_{i:06d}",
                label=c,
                audio_class=audio_class,
                text_class=text_class,
                aligned_va=int(audio_class == c),
                aligned_vt=int(text_class == c),
            )
            clips.append(truth)
            examples.append(
                schema.make_sequence_example(
                    truth["clip_id"],
                    jpegs,
                    render_audio(audio_class, r, seconds),
                    render_captions(text_class, r, num_captions, words_per_caption),
                    [c],
                    audio_chunk=chunk,
                    extra_int_context={
                        schema.ALIGNED_VA: [truth["aligned_va"]],
                        schema.ALIGNED_VT: [truth["aligned_vt"]],
                        schema.AUDIO_CLASS: [audio_class],
                        schema.TEXT_CLASS: [text_class],
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
                misaligned_fraction=misaligned_fraction,
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
