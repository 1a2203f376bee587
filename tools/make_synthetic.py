r"""Writes a synthetic triplet set (class-driven video/audio/text with known misalignment).

Example:
  python tools/make_synthetic.py --out_dir=/tmp/vatt_gh_synthetic --preset=demo

Presets: 'demo' is the set `make demo` pre-trains on (gin/demo.gin makes it under
MODEL_DIR/data); 'small' is the same with half the clips. Both are dicts in
vatt_gh/data/synthetic.py (DEMO, SMALL), the one place their sizes are written; flags override
them.
Writes the shards, vocab.txt (word vocabulary, pad id 0) and metadata.json (ground truth).
"""

from absl import app, flags

from vatt_gh import console

console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
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
    console.quiet(FLAGS.verbose)
    from vatt_gh.data import synthetic  # TensorFlow: after the flags, so --help stays fast

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
        f"wrote {len(out['clips'])} clips of {kwargs['num_frames']} frames of "
        f"{kwargs['frame_size']}x{kwargs['frame_size']} ({bad} misaligned) to "
        f"{out['file_pattern']}\n"
        f"vocabulary: {out['vocab_path']}\nground truth: {out['metadata_path']}"
    )


if __name__ == "__main__":
    app.run(main)
