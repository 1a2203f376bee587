r"""Figure 4: the distribution of cos(g_va, g_vt) over pre-training, from runs' event files.

    python tools/plot_cosines.py --run=baseline=/runs/baseline --run=realign=/runs/realign \
        --run=curriculum=/runs/curriculum --output=/tmp/figure4.png

Each --run is NAME=MODEL_DIR (or just MODEL_DIR) of a pre-training run; its histograms
`harmonize/cosines` (one per summary step, in MODEL_DIR/train) give one panel: the 5-95% and
25-75% bands, the median, and the fraction of negative cosines. A point pools consecutive summary
steps until it holds --min_cosines cosines: with granularity 'replica' on one device a step has a
single cosine (pre-train with Harmonization.granularity='group:1' for one cosine per triplet,
or 'group:N' for one per N clips; the demo uses 'group:1'). Also writes the percentiles as CSV next to the PNG.
"""

import os

from absl import app, flags

from vatt_gh import console

flags.DEFINE_multi_string("run", [], "NAME=MODEL_DIR of a pre-training run (repeat for panels).")
flags.DEFINE_string("output", None, "PNG to write.")
flags.DEFINE_string("log_subdir", "train", "Event files' directory inside each run.")
flags.DEFINE_string("title", "cos(g_va, g_vt) over pre-training", "Figure title.")
flags.DEFINE_integer(
    "min_cosines", 20, "Pool consecutive summary steps until a point has this many cosines."
)
flags.mark_flag_as_required("output")
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS


def parse_runs(specs):
    runs = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = path.rstrip("/")
        name = name or os.path.basename(path) or path
        if name in runs:
            raise SystemExit(f"error: --run name {name!r} given twice")
        runs[name] = path
    return runs


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    from vatt_gh.evaluation import figures, histories

    if not FLAGS.run:
        raise SystemExit("error: give at least one --run=NAME=MODEL_DIR")
    histories_by_run = {}
    for name, model_dir in parse_runs(FLAGS.run).items():
        log_dir = os.path.join(model_dir, FLAGS.log_subdir)
        try:
            histories_by_run[name] = histories.read_histograms(log_dir, min_count=FLAGS.min_cosines)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: --run={name}: {e}") from None
    out_dir = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(out_dir, exist_ok=True)
    figures.cosine_bands(histories_by_run, FLAGS.output, FLAGS.title)
    csv_path = os.path.splitext(FLAGS.output)[0] + ".csv"
    with open(csv_path, "w") as f:
        levels = histories.PERCENTILES
        f.write(
            "run,step,summary_steps,count,"
            + ",".join(f"p{p}" for p in levels)
            + ",fraction_negative\n"
        )
        for name, h in histories_by_run.items():
            for i, step in enumerate(h.steps):
                f.write(
                    f"{name},{step},{h.summaries_per_point[i]},{h.counts[i]:g},"
                    + ",".join(f"{v:.6g}" for v in h.percentiles[i])
                    + f",{h.fraction_negative[i]:.6g}\n"
                )
    for name, h in histories_by_run.items():
        median = h.percentiles[:, list(h.percentile_levels).index(50)]
        print(
            f"{name}: {len(h.steps)} points to step {int(h.steps[-1])} "
            f"({int(h.summaries_per_point.sum())} summary steps), {h.counts.mean():.0f} "
            f"cosines/point, median {median[0]:+.3f} -> {median[-1]:+.3f}, "
            f"fraction < 0: {h.fraction_negative.mean():.2f} on average"
        )
    print(f"wrote {FLAGS.output} and {csv_path}")


if __name__ == "__main__":
    app.run(main)
