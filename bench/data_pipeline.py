r"""Examples per second of the pre-training input pipeline on this machine.

Example:
  python bench/data_pipeline.py --seconds=40

Two sizes: the paper's (32 x 224 x 224 crops of 256-short-side JPEGs at 10 fps, 3.2 s of 48 kHz
audio, K = 5, L = 16) on generated records of 40 frames of 256 x 340, and the demo's
(8 x 32 x 32 crops of 40 x 40 synthetic frames, 0.8 s audio). Prints a markdown table with
examples/s and examples/s per CPU core (os.sched_getaffinity).
"""

import os
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import (
    app,
    flags,
)

from vatt_gh.data import schema, synthetic
from vatt_gh.data import text as text_lib
from vatt_gh.data.configs import PretrainConfig, SourceConfig
from vatt_gh.data.pretrain_input import pretrain_dataset

FLAGS = flags.FLAGS
flags.DEFINE_float("seconds", 40.0, "Measuring time per size (after warm-up).")
flags.DEFINE_integer("paper_records", 24, "Generated paper-size records.")


def _paper_records(out_dir: str, count: int) -> str:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:340]
    for shard in range(4):
        examples = []
        for i in range(count // 4):
            frames = []
            for t in range(40):  # smooth moving pattern + noise: realistic JPEG sizes
                base = 128 + 60 * np.sin((xx + 4 * t + 7 * i) / 17.0)[..., None] * np.array(
                    [1, 0.6, 0.3]
                )
                image = np.clip(base + rng.normal(0, 12, (256, 340, 1)), 0, 255).astype(np.uint8)
                frames.append(tf.io.encode_jpeg(image, quality=90).numpy())
            audio = rng.normal(0, 0.1, 4 * 48000).astype(np.float32)
            examples.append(
                schema.make_sequence_example(
                    f"p{shard}_{i}",
                    frames,
                    audio,
                    [f"step {j} cut the onion" for j in range(7)],
                    [i],
                )
            )
        schema.write_records(os.path.join(out_dir, f"paper-{shard:05d}.tfrecord"), examples)
    return os.path.join(out_dir, "paper-*.tfrecord")


def _rate(config: PretrainConfig, batch_size: int, seconds: float) -> float:
    it = iter(pretrain_dataset(config, batch_size))
    for _ in range(3):  # warm-up: tracing, autotune, shuffle buffer
        next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        n += int(batch["video"].shape[0])
    return n / (time.perf_counter() - start)


def main(argv):
    del argv
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "vocab.txt")
        text_lib.write_word_vocab(vocab, "step cut the onion 0 1 2 3 4 5 6".split())
        paper = PretrainConfig(
            sources=(SourceConfig(_paper_records(tmp, FLAGS.paper_records)),),
            vocab_path=vocab,
            shuffle_buffer=16,
        )
        rows.append(
            (
                "paper: 32 x 224 x 224 from 256 x 340 JPEGs, 3.2 s audio, K=5, L=16",
                8,
                _rate(paper, 8, FLAGS.seconds),
            )
        )
        syn = synthetic.write_synthetic(os.path.join(tmp, "demo"), **synthetic.DEMO)
        demo = PretrainConfig(
            sources=(SourceConfig(syn["file_pattern"]),),
            num_frames=8,
            crop_size=32,
            min_resize=40,
            num_captions=4,
            max_tokens=16,
            vocab_path=syn["vocab_path"],
            shuffle_buffer=256,
        )
        rows.append(
            (
                "demo: 8 x 32 x 32 from 40 x 40 JPEGs, 0.8 s audio, K=4, L=16",
                32,
                _rate(demo, 32, FLAGS.seconds),
            )
        )
    print(f"\n| input | batch | examples/s ({cores} cores) | examples/s per core |")
    print("| --- | --- | --- | --- |")
    for name, batch, rate in rows:
        print(f"| {name} | {batch} | {rate:.1f} | {rate / cores:.1f} |")


if __name__ == "__main__":
    app.run(main)
