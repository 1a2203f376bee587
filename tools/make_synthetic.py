r"""Writes a synthetic triplet set (class-driven video/audio/text with known misalignment).

Example:
  .venv/bin/python tools/make_synthetic.py --out_dir=/tmp/vatt_gh_synthetic --preset=demo

Presets: 'small' (256 clips of 16 frames at 40x40, 1.6 s audio) and 'demo' (512 clips of 12
frames at 40x40, for the demo's 8 x 32 x 32 crops and 0.8 s audio). Flags override a preset.
Writes the shards, vocab.txt (word vocabulary, pad id 0) and metadata.json (ground truth).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a bare checkout

from absl import app, flags

from vatt_gh.data import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Output directory.")
flags.DEFINE_enum("preset", "small", ["small", "demo"], "Size preset.")
flags.DEFINE_integer("num_clips", None, "Overrides the preset.")
flags.DEFINE_integer("num_classes", None, "Overrides the preset.")
flags.DEFINE_float("misaligned_fraction", None, "Overrides the preset.")
flags.DEFINE_integer("num_frames", None, "Overrides the preset.")
flags.DEFINE_integer("frame_size", None, "Overrides the preset.")
flags.DEFINE_integer("num_captions", None, "Overrides the preset.")
flags.DEFINE_integer("num_shards", None, "Overrides the preset.")
flags.DEFINE_integer("seed", 0, "Random seed (the set is a function of it).")
flags.mark_flag_as_required("out_dir")


def main(argv):
    del argv
    kwargs = dict(synthetic.DEMO if FLAGS.preset == "demo" else synthetic.SMALL)
    for name in (
        "num_clips",
        "num_classes",
        "misaligned_fraction",
        "num_frames",
        "frame_size",
        "num_captions",
        "num_shards",
    ):
        if getattr(FLAGS, name) is not None:
            kwargs[name] = getattr(FLAGS, name)
    out = synthetic.write_synthetic(FLAGS.out_dir, seed=FLAGS.seed, **kwargs)
    bad = sum(1 for c in out["clips"] if not (c["aligned_va"] and c["aligned_vt"]))
    print(
        f"wrote {len(out['clips'])} clips ({bad} misaligned) to {out['file_pattern']}\n"
        f"vocabulary: {out['vocab_path']}\nground truth: {out['metadata_path']}"
    )


if __name__ == "__main__":
    app.run(main)
