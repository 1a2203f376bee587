r"""The paper's claims on synthetic triplets whose misalignment we know (issue 19).

    python bench/reproduce.py --results_dir=results/reproduce     # the full study (see Budget)
    python bench/reproduce.py --quick --results_dir=/tmp/rq         # CI-sized smoke test
    python bench/reproduce.py --noeffect ...                        # the signal study only
    python bench/reproduce.py --nosignal --granularities=group:8,group:1 ...   # effect only
    python bench/reproduce.py --tables_only ...                     # tables from what exists

Data: synthetic triplets (`vatt_gh.data.synthetic`), 16 latent classes, the 40% set misaligned
with every kind cycled (class swaps of audio / text / both, the neighbouring clip's narration,
narration about nothing visible, silent audio, unrelated audio, shifted narration + unrelated
audio); the kind is in every record (`synthetic/misalign_kind`) and read back from there.

Sizes that let the text tower learn in 200 steps: random word vectors of norm 25
(`--word_norm`; `vatt_gh.data.word_vectors.random_table` says why random and why that norm),
two-word narrations, one naming the class (`--words_per_caption`), peak learning rate 5e-3
(`--learning_rate`). With six-word narrations and word2vec-sized vectors, loss_vt stayed at its
chance level and held-out retrieval at exactly chance (README, "Claims on controlled data").
With these, `sum` reaches t2v R@5 27% at 40% misaligned and 41% at 0% (chance 3.9%, class-oracle
ceiling 59%). The trainable-table runs start from the same vectors.

1. Where the signal is (`--signal`): `sum` pre-trained on the 40% set for each VATT variant (MA,
   MS) x word table (frozen: the fixed random table through `build_vatt.word_vectors_path`;
   trainable: the same table, trained) x seed; at evenly spaced checkpoints, for the first `--signal_clips` training
   clips, each triplet's (g_va . g_vt, |g_va|^2, |g_vt|^2) per part of the model (FAC head,
   Transformer encoder, word table, tokenizers), under two definitions: its contribution through
   its own forward path (group:1) and its own loss terms through every path (materialised, one
   backward pass per clip and loss). The cosine over all weights / the backbone / the encoder /
   the heads is a sum over parts, and its ROC AUC (aligned vs text-wrong / audio-wrong /
   both-wrong, and per kind) is averaged over seeds with a 95% t-interval. The same sums over
   each top part S of `--signal_statistics` (the variables `Harmonization.statistics` = S takes
   its cosines over) give the agreement of S's per-triplet cosine with all weights': Spearman
   correlation, the fraction of triplets whose `both` decision (drop / project / sum) differs
   at gamma -0.3, -0.15 and 0, and the AUC from each.
2. Training effect (`--effect`): `sum`, `realign`, `curriculum`, `both` at each
   `--granularities` value, at 0% and 40% misaligned, `--seeds` seeds (same init and data order
   for every method); held-out text-to-video retrieval (with its class-oracle ceiling: a
   narration names only its class) and linear probes, mean and 95% t-interval, and the paired
   difference to `sum` seed by seed with its interval. `sum` trains the same at any granularity,
   so it runs once per level and seed. Plus Table 2's curriculum (gamma_start, 0) ablation at
   40% with the same seeds, at the first granularity. `--statistics=all,heads` adds runs of
   the harmonizing methods with `Harmonization.statistics='heads'`, paired by seed with 'all'.

Each run is a fresh subprocess (`--worker_spec`); runs whose result.json exists are not
repeated (an interrupted study resumes; re-running writes the tables from what exists and lists
what is missing). Writes <results_dir>/results.md, results.json (every run's numbers, the
summaries), signal_auc_settings.png, signal_auc_weights.png, effect_R5.png, effect_R10.png and
runs/<name>/ (events, operative config, log, result.json).

Budget (the quiet 2-core machine, 2 runs at a time, 1 thread each): 97 runs = signal 2 variants
x 2 word tables x 3 seeds (12) + effect (1 sum + 3 methods x 2 granularities) x 2 levels x 5
seeds (70) + Table 2's 3 more gamma starts x 5 seeds (15). A run is ~35 s of start-up, tracing,
checkpointing and evaluation plus its steps (200 x ~65 ms for sum, ~125 ms for `both` at
group:1; measured per row in results.md); a signal run adds 3 checkpoints x 4 batches of
per-triplet gradients. Measured: ~54 min for the full benchmark (README.md, "Claims on
controlled data"). Step costs here are wall times of one-thread runs side by side; for cost
ratios use bench/step_cost.py.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import reproduce_figures as plots  # this script's folder is on the path
import reproduce_run as worker
import reproduce_study as study
import reproduce_tables as tables
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("results_dir", os.path.join(REPO, "results", "reproduce"), "Output folder.")
flags.DEFINE_bool(
    "quick",
    False,
    "CI-sized smoke test: one seed, a few steps, tiny sets, one signal run and two effect runs "
    "(explicit flags still win).",
)
flags.DEFINE_bool("signal", True, "Run the 'where is the signal' study.")
flags.DEFINE_bool("effect", True, "Run the training-effect study (and Table 2).")
flags.DEFINE_integer("steps", 200, "Pre-training steps per effect run.")
flags.DEFINE_integer("batch", 16, "Global batch size.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds of the effect study.")
flags.DEFINE_list("levels", ["0.0", "0.4"], "Misaligned fractions of the training sets.")
flags.DEFINE_list("methods", list(study.STUDY_METHODS), "Methods of the effect study.")
flags.DEFINE_list(
    "granularities",
    ["group:8", "group:1"],
    "Harmonization.granularity values of the effect study.",
)
flags.DEFINE_bool("ablation", True, "Table 2: curriculum gamma_start ablation.")
flags.DEFINE_list(
    "statistics",
    ["all"],
    "Harmonization.statistics values of the effect study; each one but 'all' adds runs of the "
    "harmonizing methods (not sum) at every granularity, paired by seed with 'all'.",
)
flags.DEFINE_enum("word_table", "frozen", study.WORD_TABLES, "Word table of the effect study.")
flags.DEFINE_enum("variant", "agnostic", study.VARIANTS, "VATT variant of the effect study.")
flags.DEFINE_integer("num_classes", 16, "Latent classes of the synthetic sets.")
flags.DEFINE_list("kinds", [], "Misalignment kinds of the training sets (default: every kind).")
flags.DEFINE_integer(
    "words_per_caption", 2, "Words per synthetic narration (one names the class, the rest filler)."
)
flags.DEFINE_float("word_norm", 25.0, "Norm of every vector of the fixed random word table.")
flags.DEFINE_float(
    "learning_rate", 5e-3, "Peak learning rate of every run (50 warm-up steps, decay to 1/10)."
)
flags.DEFINE_integer("train_clips", 512, "Clips per training set.")
flags.DEFINE_integer("test_clips", 128, "Clean held-out clips (retrieval, probe test).")
flags.DEFINE_integer("probe_train_clips", 256, "Clean clips to fit the linear probes on.")
flags.DEFINE_integer("num_windows", 1, "Evaluation windows per held-out clip.")
flags.DEFINE_list("signal_seeds", ["0", "1", "2"], "Seeds of the signal study.")
flags.DEFINE_integer("signal_steps", 200, "Pre-training steps per signal run.")
flags.DEFINE_integer("signal_checkpoints", 3, "Evenly spaced checkpoints measured per run.")
flags.DEFINE_integer("signal_clips", 64, "Training clips whose gradients are measured.")
flags.DEFINE_string(
    "signal_granularity", "group:1", "Granularity `sum` monitors in the signal runs."
)
flags.DEFINE_list("signal_word_tables", list(study.WORD_TABLES), "Word tables of the signal study.")
flags.DEFINE_list("signal_variants", list(study.VARIANTS), "VATT variants of the signal study.")
flags.DEFINE_list(
    "signal_statistics",
    ["heads", "top:1", "top:2"],
    "Top parts S whose per-triplet statistics the signal runs record beside the parts, for the "
    "agreement of S's cosines and decisions with all weights' ('top:K' deeper than the model: "
    "skipped).",
)
flags.DEFINE_string("preset", "tiny", "build_vatt.preset.")
flags.DEFINE_multi_string("gin_param", [], "More bindings for every run (e.g. model sizes).")
flags.DEFINE_bool("keep_checkpoints", False, "Keep each run's checkpoints.")
flags.DEFINE_integer("parallel", 2, "Runs at a time.")
flags.DEFINE_bool(
    "tables_only",
    False,
    "Run nothing: write the tables from the results that exist (the missing runs are listed).",
)
flags.DEFINE_integer("threads_per_run", 1, "TF intra/inter-op threads per run (0: TF default).")
flags.DEFINE_string("worker_spec", None, "Internal: run the one job described by this JSON.")
FLAGS = flags.FLAGS

QUICK = dict(  # --quick: every piece once, CI-sized
    steps=4,
    batch=8,
    seeds=["0"],
    levels=["0.4"],
    methods=["sum", "curriculum"],
    ablation=False,
    num_classes=4,
    train_clips=32,
    test_clips=16,
    probe_train_clips=16,
    signal_seeds=["0"],
    signal_steps=4,
    signal_checkpoints=2,
    signal_clips=16,
    signal_word_tables=["frozen"],
    signal_variants=["agnostic"],
    gin_param=["build_vatt.num_layers=1"],
)


def apply_quick():
    """--quick: the QUICK sizes for every flag not given on the command line."""
    if not FLAGS.quick:
        return
    for name, value in QUICK.items():
        if not FLAGS[name].present:
            setattr(FLAGS, name, value)


def _floats(name, values):
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{name}: {values!r} are not numbers") from None
    if not all(0.0 <= v <= 1.0 for v in out):
        raise app.UsageError(f"--{name}: fractions must lie in [0, 1], got {values!r}")
    return out


def _ints(name, values):
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{name}: {values!r} are not integers") from None


def _check_statistics():
    from vatt_gh.harmonize import Harmonization

    for name in ("statistics", "signal_statistics"):
        for value in getattr(FLAGS, name):
            try:
                Harmonization(statistics=value)
            except ValueError as e:
                raise app.UsageError(f"--{name}: {e}") from None


def setting_from_flags() -> study.Setting:
    for name in (
        "steps",
        "batch",
        "train_clips",
        "test_clips",
        "probe_train_clips",
        "words_per_caption",
    ):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be positive, got {getattr(FLAGS, name)}")
    for name in ("word_norm", "learning_rate"):
        if not (math.isfinite(getattr(FLAGS, name)) and getattr(FLAGS, name) > 0):
            raise app.UsageError(f"--{name} must be a positive number, got {getattr(FLAGS, name)}")
    if FLAGS.signal_checkpoints < 1 or FLAGS.signal_clips < FLAGS.batch:
        raise app.UsageError("--signal_checkpoints >= 1 and --signal_clips >= --batch needed")
    for name, known in (
        ("methods", study.METHOD_GIN),
        ("signal_word_tables", study.WORD_TABLES),
        ("signal_variants", study.VARIANTS),
    ):
        unknown = [v for v in getattr(FLAGS, name) if v not in known]
        if unknown:
            raise app.UsageError(f"--{name}: unknown {unknown}; choose from {list(known)}")
    _check_statistics()
    return study.Setting(
        steps=FLAGS.steps,
        batch=FLAGS.batch,
        seeds=_ints("seeds", FLAGS.seeds),
        levels=_floats("levels", FLAGS.levels),
        methods=tuple(FLAGS.methods),
        granularities=tuple(FLAGS.granularities),
        ablation=FLAGS.ablation,
        statistics=tuple(FLAGS.statistics),
        word_table=FLAGS.word_table,
        variant=FLAGS.variant,
        num_classes=FLAGS.num_classes,
        train_clips=FLAGS.train_clips,
        test_clips=FLAGS.test_clips,
        probe_train_clips=FLAGS.probe_train_clips,
        num_windows=FLAGS.num_windows,
        kinds=tuple(FLAGS.kinds),
        words_per_caption=FLAGS.words_per_caption,
        word_norm=FLAGS.word_norm,
        learning_rate=FLAGS.learning_rate,
        signal=FLAGS.signal,
        signal_seeds=_ints("signal_seeds", FLAGS.signal_seeds),
        signal_steps=FLAGS.signal_steps,
        signal_checkpoints=FLAGS.signal_checkpoints,
        signal_clips=FLAGS.signal_clips,
        signal_granularity=FLAGS.signal_granularity,
        signal_word_tables=tuple(FLAGS.signal_word_tables),
        signal_variants=tuple(FLAGS.signal_variants),
        signal_statistics=tuple(FLAGS.signal_statistics),
        effect=FLAGS.effect,
        preset=FLAGS.preset,
        extra_gin=tuple(FLAGS.gin_param),
        keep_checkpoints=FLAGS.keep_checkpoints,
    )


def make_data(results_dir: str, setting: study.Setting):
    """Every synthetic set, unless already there (metadata.json marks a finished set)."""
    from vatt_gh.data import synthetic

    for job in study.data_jobs(results_dir, setting):
        meta_path = os.path.join(job["out_dir"], "metadata.json")
        if not os.path.exists(meta_path):
            print(f"writing {job['num_clips']} clips to {job['out_dir']}", flush=True)
            synthetic.write_synthetic(**job)
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        for key in (
            "num_clips",
            "num_classes",
            "misaligned_fraction",
            "misalign_kinds",
            "words_per_caption",
        ):
            if meta.get(key) != (list(job[key]) if key == "misalign_kinds" else job[key]):
                raise SystemExit(
                    f"{meta_path}: {key}={meta.get(key)!r} but this benchmark asks for "
                    f"{job[key]!r}; use another --results_dir"
                )
    study.write_word_vectors(results_dir, setting)


def child_env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if FLAGS.threads_per_run:
        threads = str(FLAGS.threads_per_run)
        env.update(
            TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads, OMP_NUM_THREADS=threads
        )
    return env


def launch(run: study.Run, setting: study.Setting, results_dir: str) -> subprocess.Popen:
    spec = study.run_spec(run, setting, results_dir)
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


def run_all(runs, setting: study.Setting, results_dir: str) -> list:
    """At most --parallel subprocesses at a time; returns the names of failed runs."""
    pending = [r for r in runs if not os.path.exists(study.result_path(results_dir, r))]
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
            ok = process.returncode == 0 and os.path.exists(study.result_path(results_dir, run))
            if not ok:
                failed.append(name)
            print(
                f"[{time.time() - start:6.0f}s] {name}: {'done' if ok else 'FAILED'} in "
                f"{time.time() - began:.0f}s ({len(pending)} pending)",
                flush=True,
            )
    return failed


def signal_text(signal, setting: study.Setting, results_dir: str, summary: dict, figures: list):
    """The signal study's sections (and figures, appended to `figures`)."""
    text = []
    summary["signal"] = tables.signal_summary(signal)
    steps = sorted({int(k.rsplit("|", 1)[1]) for k in summary["signal"]})
    text += [
        "## Where the signal is: ROC AUC of cos(g_va, g_vt), aligned vs misaligned",
        "",
        f"`sum` pre-trained {setting.signal_steps} steps on the "
        f"{100 * max(setting.levels):.0f}% set; at each checkpoint the first "
        f"{setting.signal_clips} training clips' per-triplet gradients, materialised, "
        "per variable. AUC > 0.5: aligned triplets have the higher cosine. Columns: "
        "aligned vs triplets whose text only / audio only / both are wrong.",
        "",
    ]
    for step in steps:
        text += [f"### Step {step}", "", tables.signal_table(summary["signal"], step), ""]
    combos = [(v, w) for v in setting.signal_variants for w in setting.signal_word_tables]
    figures.append(
        plots.signal_figure(
            summary["signal"],
            os.path.join(results_dir, "signal_auc_settings.png"),
            [(v, w, d, "all") for v, w in combos for d in study.DEFINITIONS],
            f"Does cos(g_va, g_vt) mark misaligned triplets? All weights, "
            f"{setting.signal_clips} training clips",
        )
    )
    v, w = combos[0]
    figures.append(
        plots.signal_figure(
            summary["signal"],
            os.path.join(results_dir, "signal_auc_weights.png"),
            [(v, w, d, f) for d in study.DEFINITIONS for f in study.FILTERS],
            f"Which weights carry the signal? VATT-{'MA' if v == 'agnostic' else 'MS'}, "
            f"{w} word table, {setting.signal_clips} training clips",
        )
    )
    kinds_rows = []
    last = steps[-1]
    for key in sorted(summary["signal"]):
        variant, words, definition, name, at = key.split("|")
        if int(at) != last or name != "all":
            continue
        cells = summary["signal"][key]
        kinds_rows.append(
            f"| {variant} | {words} | {definition} | "
            + " | ".join(tables.fmt(cells.get(k), 2) for k in tables.synthetic_kinds())
            + " |"
        )
    text += [
        f"### By misalignment kind (step {last}, all weights)",
        "",
        "| variant | word table | definition | " + " | ".join(tables.synthetic_kinds()) + " |",
        "|" + " --- |" * (3 + len(tables.synthetic_kinds())),
        *kinds_rows,
        "",
    ]
    if any(r.get("top_names") for r in signal):
        summary["agreement"] = tables.agreement_summary(signal)
        text += [
            "## Statistics from a top part S: agreement with all weights",
            "",
            "Per triplet (own path, group:1: what `Harmonization.statistics` harmonizes "
            "with), the cosine over S's variables against the one over all weights, from "
            "the same measurement: Spearman correlation; the fraction of triplets whose "
            "decision under `both` (drop: cos <= gamma, project: gamma < cos < 0, sum: "
            "cos >= 0) differs, at the paper's gammas; the fraction each drops at the "
            "middle gamma; the ROC AUC aligned vs misaligned from each cosine.",
            "",
            tables.agreement_table(summary["agreement"]),
            "",
        ]
    return text


def effect_text(effect, setting: study.Setting, results_dir: str, summary: dict, figures: list):
    """The effect study's sections (and figures, appended to `figures`)."""
    text = []
    summary["effect"] = tables.effect_summary(effect)
    keys = list(summary["effect"])
    main_rows = [k for k in keys if "(" not in k]
    ablation_rows = [
        k
        for k in keys
        if "(" in k
        or (
            k.endswith("|curriculum")
            and k.startswith(f"{max(setting.levels)}|{setting.granularities[0]}|")
        )
    ]
    ceiling = next((c["ceiling"] for c in summary["effect"].values() if c.get("ceiling")), None)
    text += [
        "## Training effect: held-out retrieval and probes",
        "",
        f"{setting.steps} steps per run, word table {setting.word_table}, VATT "
        f"{setting.variant}; the same seeds (init and data order) for every method. Held "
        f"out: {setting.test_clips} clean clips (retrieval, probe test), "
        f"{setting.probe_train_clips} clean clips to fit the probes. Paired: method minus "
        "`sum` at the same level, granularity and seed. Class-oracle ceiling of the "
        "retrieval (a narration names only its class): "
        + (", ".join(f"{k[4:]} {v:.1f}" for k, v in ceiling.items()) if ceiling else "n/a")
        + ".",
        "",
        tables.effect_table(summary["effect"], main_rows),
        "",
    ]
    if any(" [" in k for k in main_rows):
        text += [
            "## Statistics from a top part S: effect on training",
            "",
            "Each row: the run with `Harmonization.statistics` = S minus the same method "
            "over all weights, same level, granularity and seed.",
            "",
            tables.statistics_table(summary["effect"]),
            "",
        ]
    if ablation_rows:
        text += [
            "## Table 2 ablation: curriculum (gamma_start, gamma_end)",
            "",
            tables.effect_table(summary["effect"], ablation_rows),
            "",
        ]
    for column in ("t2v R@5", "t2v R@10"):
        tag = column.split()[-1].replace("@", "")
        figures.append(
            plots.effect_figure(
                {k: summary["effect"][k] for k in main_rows},
                os.path.join(results_dir, f"effect_{tag}.png"),
                column,
                f"Does harmonization beat sum? Text-to-video {column.split()[-1]}, "
                f"{setting.test_clips} clean held-out clips, {setting.steps} steps",
            )
        )
    return text


def write_outputs(runs, setting: study.Setting, results_dir: str, seconds: float):
    results = [
        json.load(open(study.result_path(results_dir, r)))
        for r in runs
        if os.path.exists(study.result_path(results_dir, r))
    ]
    signal = [r for r in results if r["run"]["study"] == "signal"]
    effect = [r for r in results if r["run"]["study"] == "effect"]
    done = {r["run"]["name"] for r in results}
    missing = [r.name for r in runs if r.name not in done]
    text = [
        "# Gradient harmonization on controlled synthetic data (bench/reproduce.py)",
        "",
        "Command: `python bench/reproduce.py " + " ".join(sys.argv[1:]) + "`",
        "",
        f"VATT preset `{setting.preset}` (extra bindings: {list(setting.extra_gin) or 'none'}), "
        f"batch {setting.batch}, {setting.num_classes} latent classes, {setting.train_clips} "
        f"training clips per level, {setting.words_per_caption}-word narrations, word vectors "
        f"of norm {setting.word_norm:g}, peak learning rate {setting.learning_rate:g}; "
        f"misalignment kinds cycled over the misaligned clips: "
        f"{list(setting.kinds) or 'every kind (swaps, shifted narration, off-screen narration, '}"
        f"{'' if setting.kinds else 'silent audio, unrelated audio, shifted + unrelated)'}. "
        f"Intervals: mean [95% Student-t interval] over seeds. "
        f"Wall time of this invocation: {seconds / 60:.1f} min; "
        f"{len(results)} of {len(runs)} planned runs have results.",
        "",
    ]
    summary = {}
    figures = []
    if signal:
        text += signal_text(signal, setting, results_dir, summary, figures)
    if effect:
        text += effect_text(effect, setting, results_dir, summary, figures)
    if missing:
        text += [f"NOT RUN (no result): {len(missing)} runs: " + ", ".join(missing), ""]
    text += ["Figures: " + ", ".join(os.path.basename(p) for p in figures), ""]
    with open(os.path.join(results_dir, "results.md"), "w") as f:
        f.write("\n".join(text))
    with open(os.path.join(results_dir, "results.json"), "w") as f:
        json.dump(
            {
                "setting": dataclasses.asdict(setting),
                "summary": summary,
                "missing": missing,
                "runs": [{k: v for k, v in r.items() if k != "along_training"} for r in results],
            },
            f,
            indent=1,
            default=float,
        )
    print("\n".join(text))


def main(argv):
    del argv
    if FLAGS.worker_spec:
        with open(FLAGS.worker_spec) as f:
            worker.execute(json.load(f))
        return
    start = time.time()
    results_dir = os.path.abspath(FLAGS.results_dir)
    apply_quick()
    setting = setting_from_flags()
    os.makedirs(results_dir, exist_ok=True)
    make_data(results_dir, setting)
    runs = study.plan(setting)
    failed = [] if FLAGS.tables_only else run_all(runs, setting, results_dir)
    write_outputs(runs, setting, results_dir, time.time() - start)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed, see runs/<name>/log.txt: {failed}")


if __name__ == "__main__":
    app.run(main)
