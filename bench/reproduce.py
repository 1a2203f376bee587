r"""Check the paper's claims on synthetic triplets whose misalignment we control (issue 8).

    python bench/reproduce.py                                   # default: ~45 min on 2 CPU cores
    python bench/reproduce.py --steps=2000 --batch=64 --seeds=0,1,2,3,4 --preset=small \
        --parallel=1 --threads_per_run=0 --results_dir=results/reproduce_big   # a GPU / big box
    python bench/reproduce.py --steps=6 --seeds=0 --methods=sum,both --levels=0.4 \
        --noablation --train_clips=64 --test_clips=32 --probe_train_clips=32   # smoke

Pre-trains the tiny VATT with every method of Table 1 (sum = VATT, RW-VA, RW-VT, realign,
curriculum, both, gradvac) on synthetic triplets at several misaligned fractions (the same
videos at every level; only the misaligned pairs differ), with the same seeds, steps and data
order for every method, plus the Table 2 curriculum ablation (gamma_start -0.3 / -0.2 / -0.1 / 0,
gamma_end 0) at the most misaligned level. Harmonization is per triplet: granularity
'group:1' by default (exact per-triplet dot products and norms, docs/harmonization.md; the
'replica' granularity on one device would make curriculum drop whole batches).

Each run is a fresh subprocess (`--worker_spec`): pre-training through the same gin files and
bindings as tools/pretrain.py, then, with the final weights and on a clean held-out set (0%
misaligned, other seeds):
- zero-shot text-to-video retrieval (R@1/5/10, median rank);
- linear probes of the 8 latent classes on pooled video and audio features;
- at evenly spaced checkpoints, cos(g_va, g_vt) per triplet on a fixed batch of TRAINING clips of
  the most misaligned set: ROC AUC aligned vs misaligned (Section 3.1), share of negatives;
- from the run's TensorBoard events: wall time per step and the share of negative cosines over
  training (the `harmonize/cosines` histograms, the paper's ~50% observation).
Writes <results_dir>/results.md (the table, mean ± std over seeds), results.json (every run's raw
numbers and the spreads), figure4_<level>.png (Figure 4, one panel per method) and runs/<name>/
(events, operative config, log, result.json; checkpoints only with --keep_checkpoints). Runs
whose result.json exists are not repeated. Step costs are wall times on a shared machine: for
cost ratios measured side by side use bench/step_cost.py.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import reproduce_lib as lib  # noqa: E402
from absl import app, flags  # noqa: E402

flags.DEFINE_string("results_dir", os.path.join(REPO, "results", "reproduce"), "Output folder.")
flags.DEFINE_integer("steps", 200, "Pre-training steps per run.")
flags.DEFINE_integer("batch", 16, "Global batch size.")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds (model init and data order) per cell.")
flags.DEFINE_list("levels", ["0.0", "0.4"], "Misaligned fractions of the training set.")
flags.DEFINE_list("methods", list(lib.METHODS), "Table 1 rows at misaligned levels.")
flags.DEFINE_list(
    "clean_methods",
    list(lib.Setting.clean_methods),
    "Rows at the 0% level (the control; all --methods on a big machine).",
)
flags.DEFINE_bool("ablation", True, "Table 2: curriculum gamma_start ablation.")
flags.DEFINE_string("granularity", "group:1", "Harmonization.granularity of every run.")
flags.DEFINE_string("preset", "tiny", "build_vatt.preset.")
flags.DEFINE_integer("train_clips", 512, "Clips per training set.")
flags.DEFINE_integer("test_clips", 128, "Clean held-out clips (retrieval, probe test).")
flags.DEFINE_integer("probe_train_clips", 256, "Clean clips to fit the linear probes on.")
flags.DEFINE_integer(
    "cosine_probe_clips",
    64,
    "Training clips whose per-triplet cosines are measured at each checkpoint.",
)
flags.DEFINE_integer("cosine_checkpoints", 2, "Evenly spaced checkpoints with cosine AUCs.")
flags.DEFINE_integer("num_windows", 2, "Evaluation windows per held-out clip.")
flags.DEFINE_multi_string("gin_param", [], "More bindings for every run (e.g. model sizes).")
flags.DEFINE_bool(
    "keep_checkpoints",
    False,
    "Keep each run's checkpoints (with the input "
    "iterator's state, ~250 MB a run at the default sizes).",
)
flags.DEFINE_integer("parallel", 2, "Runs at a time.")
flags.DEFINE_integer("threads_per_run", 1, "TF intra/inter-op threads per run (0: TF default).")
flags.DEFINE_string("worker_spec", None, "Internal: run the one job described by this JSON.")
FLAGS = flags.FLAGS


def setting_from_flags() -> lib.Setting:
    return lib.Setting(
        steps=FLAGS.steps,
        batch=FLAGS.batch,
        seeds=tuple(int(s) for s in FLAGS.seeds),
        levels=tuple(float(x) for x in FLAGS.levels),
        methods=tuple(FLAGS.methods),
        clean_methods=tuple(FLAGS.clean_methods),
        ablation=FLAGS.ablation,
        granularity=FLAGS.granularity,
        train_clips=FLAGS.train_clips,
        test_clips=FLAGS.test_clips,
        probe_train_clips=FLAGS.probe_train_clips,
        cosine_probe_clips=FLAGS.cosine_probe_clips,
        cosine_checkpoints=FLAGS.cosine_checkpoints,
        num_windows=FLAGS.num_windows,
        preset=FLAGS.preset,
        extra_gin=tuple(FLAGS.gin_param),
        keep_checkpoints=FLAGS.keep_checkpoints,
    )


def make_data(results_dir: str, setting: lib.Setting):
    """Every synthetic set, unless already there (metadata.json marks a finished set)."""
    from vatt_gh.data import synthetic

    for job in lib.data_jobs(results_dir, setting):
        if not os.path.exists(os.path.join(job["out_dir"], "metadata.json")):
            print(f"writing {job['num_clips']} clips to {job['out_dir']}", flush=True)
            synthetic.write_synthetic(**job)


def child_env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if FLAGS.threads_per_run:
        threads = str(FLAGS.threads_per_run)
        env.update(
            TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads, OMP_NUM_THREADS=threads
        )
    return env


def launch(run: lib.Run, setting: lib.Setting, results_dir: str) -> subprocess.Popen:
    spec = lib.run_spec(run, setting, results_dir)
    os.makedirs(spec["model_dir"], exist_ok=True)
    spec_path = os.path.join(spec["model_dir"], "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1)
    log = open(os.path.join(spec["model_dir"], "log.txt"), "w")
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f"--worker_spec={spec_path}"],
        cwd=REPO,
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_all(runs, setting: lib.Setting, results_dir: str) -> list:
    """At most --parallel subprocesses at a time; returns the names of failed runs."""
    pending = [r for r in runs if not os.path.exists(lib.result_path(results_dir, r))]
    print(f"{len(runs)} runs, {len(runs) - len(pending)} already done", flush=True)
    active, failed, start = {}, [], time.time()
    while pending or active:
        while pending and len(active) < FLAGS.parallel:
            run = pending.pop(0)
            active[run.name] = (run, launch(run, setting, results_dir), time.time())
        time.sleep(1.0)
        for name, (run, process, began) in list(active.items()):
            if process.poll() is None:
                continue
            del active[name]
            ok = process.returncode == 0 and os.path.exists(lib.result_path(results_dir, run))
            if not ok:
                failed.append(name)
            print(
                f"[{time.time() - start:6.0f}s] {name}: {'done' if ok else 'FAILED'} in "
                f"{time.time() - began:.0f}s ({len(pending)} pending)",
                flush=True,
            )
    return failed


def write_outputs(runs, setting: lib.Setting, results_dir: str, seconds: float):
    results = [
        json.load(open(lib.result_path(results_dir, r)))
        for r in runs
        if os.path.exists(lib.result_path(results_dir, r))
    ]
    summary = lib.summarize(results)
    order = list(dict.fromkeys(f"{r['run']['level']}|{lib.row_label(r['run'])}" for r in results))
    main_rows = [k for k in order if "(" not in k]
    ablation_rows = [
        k
        for k in order
        if "(" in k or (k.endswith("|curriculum") and k.startswith(f"{max(setting.levels)}|"))
    ]
    figures = lib.cosine_figures(results, results_dir, setting.seeds[0])
    text = [
        "# Gradient harmonization on controlled synthetic data (bench/reproduce.py)",
        "",
        "Command: `python bench/reproduce.py " + " ".join(sys.argv[1:]) + "`",
        "",
        f"Tiny VATT (`build_vatt.preset='{setting.preset}'`), {setting.steps} steps, batch "
        f"{setting.batch}, granularity `{setting.granularity}` for every method (per-triplet "
        f"harmonization), seeds {list(setting.seeds)} (same init and data order for every "
        f"method), {setting.train_clips} training clips per level. Held out: "
        f"{setting.test_clips} clean clips (retrieval, probe test; {setting.num_windows} "
        f"windows), {setting.probe_train_clips} clean clips to fit the probes. Cells: mean ± "
        f"std over seeds. Cosine AUC: ROC AUC of cos(g_va, g_vt) for aligned vs misaligned "
        f"triplets, on the first {setting.cosine_probe_clips} training clips of the "
        f"{100 * max(setting.levels):.0f}% set (for the 0% rows these clips' misaligned pairs "
        f"were never trained on); 0.5 = no separation. Cost: ms/step from the run's event "
        f"times ({FLAGS.parallel} runs shared 2 cores), x sum against `sum` at the same level.",
        f"Wall time of this invocation: {seconds / 60:.1f} min.",
        "",
        "## Table 1 style",
        "",
        lib.markdown_table(summary, main_rows),
        "",
    ]
    if ablation_rows:
        text += [
            "## Table 2 ablation: curriculum (gamma_start, gamma_end)",
            "",
            lib.markdown_table(summary, ablation_rows),
            "",
        ]
    text += ["Figures: " + ", ".join(os.path.basename(p) for p in figures), ""]
    with open(os.path.join(results_dir, "results.md"), "w") as f:
        f.write("\n".join(text))
    with open(os.path.join(results_dir, "results.json"), "w") as f:
        json.dump(
            {"setting": dataclasses.asdict(setting), "summary": summary, "runs": results},
            f,
            indent=1,
            default=float,
        )
    print("\n".join(text))


def main(argv):
    del argv
    if FLAGS.worker_spec:
        with open(FLAGS.worker_spec) as f:
            lib.execute(json.load(f))
        return
    start = time.time()
    results_dir = os.path.abspath(FLAGS.results_dir)
    setting = setting_from_flags()
    os.makedirs(results_dir, exist_ok=True)
    make_data(results_dir, setting)
    runs = lib.plan(setting)
    failed = run_all(runs, setting, results_dir)
    write_outputs(runs, setting, results_dir, time.time() - start)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed, see runs/<name>/log.txt: {failed}")


if __name__ == "__main__":
    app.run(main)
