r"""Figure 3: which triplets have conflicting gradients? cos(g_va, g_vt) per triplet of a record set.

    python tools/inspect_conflicts.py --model_dir=/tmp/vatt_gh_demo \
        --pattern='/tmp/vatt_gh_demo/data/synthetic-*.tfrecord' --output_dir=/tmp/conflicts

Runs the checkpoint over the records in pre-training-style batches (one central window, the run's
K central narrations, --batch_size clips sharing negatives, model in training mode) and measures,
per triplet, the cosine of the gradients of its video-audio and video-text loss terms (nothing is
applied). Writes to --output_dir:
  cosines.csv        clip_id, cosine, dot, norms, label, aligned flags (synthetic ground truth)
  conflicts.html     the top and bottom --fraction triplets: frames and narrations side by side
  top.png, bottom.png  contact sheets of the same;  cosines.png  the distribution
  summary.json       counts, mean cosine, fraction negative, and for synthetic data the ROC AUC
                     of the cosine separating aligned (both pairs) from misaligned triplets
"""

import os

from absl import app, flags

from vatt_gh import console
from vatt_gh.evaluation import run_flags

run_flags.define_run_flags()
flags.adopt_module_key_flags(run_flags)  # listed by --help
flags.DEFINE_string("pattern", None, "Records (triplets) to inspect.")
flags.DEFINE_string("output_dir", None, "Where the CSV, HTML, PNGs and summary go.")
flags.DEFINE_string("vocab_path", None, "Vocabulary of the run (default: found from the run).")
flags.DEFINE_integer("batch_size", 16, "Triplets per batch (they are each other's negatives).")
flags.DEFINE_float("fraction", 0.05, "Share of triplets shown at each end (paper: 5%).")
flags.DEFINE_integer("max_clips", 0, "Inspect at most this many clips (0 = all).")
flags.DEFINE_enum(
    "granularity",
    "example",
    ["example", "group:1"],
    "Per-triplet gradient: of the clip's own loss terms (example; batch x "
    "parameters in memory; one device) or its contribution through its own forward "
    "path, the training definition (group:1; the memory of one step, for large models).",
)
flags.DEFINE_integer("frames_shown", 8, "Frames per clip on the page and the sheets.")
flags.DEFINE_integer("max_sheet_rows", 12, "At most this many clips per contact sheet.")
for _name in ("model_dir", "pattern", "output_dir"):
    flags.mark_flag_as_required(_name)
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS


def inspect():
    import numpy as np

    from vatt_gh import configs
    from vatt_gh.data.configs import PretrainConfig
    from vatt_gh.evaluation import conflicts, features, figures, results, run

    if not 0 < FLAGS.fraction <= 0.5:
        raise run.EvalError(f"--fraction={FLAGS.fraction}: must lie in (0, 0.5]")
    if FLAGS.batch_size < 2:
        raise run.EvalError(f"--batch_size={FLAGS.batch_size}: contrastive losses need >= 2")
    run.check_pattern("pattern", FLAGS.pattern)
    model, step = configs.open_run(
        FLAGS.model_dir, FLAGS.checkpoint, FLAGS.gin_file, FLAGS.gin_param
    )
    try:
        vocab = features.resolve_vocab(FLAGS.model_dir, FLAGS.vocab_path)
        num_captions = PretrainConfig().num_captions
        config = features.eval_config_for_run(
            FLAGS.pattern, vocab, num_windows=1, num_captions=num_captions
        )
    except ValueError as e:
        raise run.EvalError(str(e)) from None
    try:
        rows = conflicts.triplet_cosines(
            model, config, FLAGS.batch_size, FLAGS.max_clips or None, FLAGS.granularity
        )
    except ValueError as e:
        raise run.EvalError(f"--pattern: {e}") from None

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    out = lambda name: os.path.join(FLAGS.output_dir, name)
    conflicts.write_csv(out("cosines.csv"), rows)
    top, bottom = conflicts.select_extremes(rows["cosine"], FLAGS.fraction)
    auc = conflicts.alignment_auc(rows["cosine"], rows["aligned_va"], rows["aligned_vt"])
    aligned = (rows["aligned_va"] > 0.5) & (rows["aligned_vt"] > 0.5)
    synthetic = not aligned.all()
    percent = f"{100 * FLAGS.fraction:g}%"
    groups = {
        f"top {percent} (most aligned gradients)": top,
        f"bottom {percent} (most conflicting gradients)": bottom,
    }
    selected = [str(rows["clip_id"][i]) for i in np.concatenate([top, bottom])]
    clips = conflicts.read_clips(FLAGS.pattern, selected, FLAGS.frames_shown)
    title = f"Gradient conflicts: {os.path.basename(FLAGS.model_dir.rstrip('/'))} step {step}"
    conflicts.write_html(out("conflicts.html"), rows, groups, clips, title, synthetic, auc)
    total = len(rows["cosine"])
    for name, indices, meaning in (
        ("top", top, "most aligned gradients, highest cosine first"),
        ("bottom", bottom, "most conflicting gradients, lowest cosine first"),
    ):
        shown = indices[: FLAGS.max_sheet_rows]
        sheet = conflicts.contact_sheet_rows(rows, shown, clips, synthetic)
        heading = f"{title}\n{name} {percent} of {total} triplets ({len(indices)}, {meaning})" + (
            f": the {len(shown)} most extreme shown" if len(shown) < len(indices) else ""
        )
        figures.contact_sheet(sheet, out(f"{name}.png"), heading)
    figures.cosine_histogram(
        rows["cosine"],
        aligned if synthetic else None,
        out("cosines.png"),
        f"{title}: cos(g_va, g_vt) per triplet ({len(rows['cosine'])} triplets)",
    )
    summary = {
        "step": step,
        "num_triplets": int(len(rows["cosine"])),
        "batch_size": FLAGS.batch_size,
        "granularity": FLAGS.granularity,
        "mean_cosine": float(np.mean(rows["cosine"])),
        "fraction_negative": float(np.mean(rows["cosine"] < 0)),
        "num_selected_each": int(len(top)),
        "auc_aligned": auc,
    }
    if synthetic:
        summary.update(
            mean_cosine_aligned=float(np.mean(rows["cosine"][aligned])),
            mean_cosine_misaligned=float(np.mean(rows["cosine"][~aligned])),
            num_aligned=int(aligned.sum()),
        )
    results.write_json(out("summary.json"), summary)
    return summary


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    from vatt_gh.data.rejects import BadRecordError
    from vatt_gh.evaluation import run

    try:
        summary = inspect()
    except (run.EvalError, BadRecordError) as e:
        raise SystemExit(f"error: {e}") from None
    print(
        f"step {summary['step']}: {summary['num_triplets']} triplets, mean cosine "
        f"{summary['mean_cosine']:+.4f}, {100 * summary['fraction_negative']:.1f}% negative"
    )
    if summary["auc_aligned"] is not None:
        print(
            f"ROC AUC (aligned vs misaligned triplets): {summary['auc_aligned']:.3f}; mean cosine "
            f"aligned {summary['mean_cosine_aligned']:+.4f}, misaligned "
            f"{summary['mean_cosine_misaligned']:+.4f}"
        )
    print(
        f"wrote {FLAGS.output_dir}/cosines.csv, conflicts.html, top.png, bottom.png, "
        "cosines.png, summary.json"
    )


if __name__ == "__main__":
    app.run(main)
