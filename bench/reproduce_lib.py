"""The pieces of `bench/reproduce.py`: the plan of runs, one run (train + evaluate), the table.

    python bench/reproduce.py                      # the whole benchmark (see its docstring)

One run = one pre-training (gin files + bindings, exactly what tools/pretrain.py parses) followed,
in the same fresh subprocess, by its evaluation; gin never leaks between runs. Everything a run
measures goes to <results_dir>/runs/<name>/result.json, which the table is made from (a run whose
result exists is not repeated, so an interrupted benchmark resumes).
"""

import dataclasses
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Table 1 rows: label -> (method gin file, extra bindings).
METHODS = {
    "sum": ("gin/baseline.gin", ()),
    "RW-VA": ("gin/reweight_va.gin", ()),
    "RW-VT": ("gin/reweight_vt.gin", ()),
    "realign": ("gin/realign.gin", ()),
    "curriculum": ("gin/curriculum.gin", ()),
    "both": ("gin/both.gin", ()),
    "gradvac": ("gin/gradvac.gin", ()),
}
ABLATION_STARTS = (-0.3, -0.2, -0.1, 0.0)  # Table 2: curriculum (gamma_start, 0)


@dataclasses.dataclass(frozen=True)
class Setting:
    """The sizes of one benchmark (flags of bench/reproduce.py)."""

    steps: int = 200
    batch: int = 16
    seeds: Sequence[int] = (0, 1)
    levels: Sequence[float] = (0.0, 0.4)
    methods: Sequence[str] = tuple(METHODS)
    clean_methods: Sequence[str] = ("sum", "curriculum", "both")  # rows at level 0
    ablation: bool = True
    granularity: str = "example_fast"
    train_clips: int = 512
    test_clips: int = 128
    probe_train_clips: int = 256
    cosine_probe_clips: int = 64
    cosine_checkpoints: int = 2  # checkpoints (evenly spaced, the last included)
    num_windows: int = 2
    preset: str = "tiny"
    extra_gin: Sequence[str] = ()  # more --gin_param bindings for every run
    keep_checkpoints: bool = False  # the iterator state makes them ~250 MB a run


@dataclasses.dataclass(frozen=True)
class Run:
    """One pre-training + evaluation."""

    name: str
    method: str  # a METHODS label, or 'curriculum' for the ablation
    level: float  # misaligned fraction of the training set
    seed: int
    gamma_start: Optional[float] = None  # ablation only


def level_tag(level: float) -> str:
    return f"mis{int(round(100 * level)):02d}"


def plan(setting: Setting) -> List[Run]:
    """Every (method, level, seed), most misaligned level first (level 0 runs only
    `clean_methods`), then the Table 2 starts not already in the main table."""
    runs = [
        Run(f"{level_tag(level)}-{method}-s{seed}", method, level, seed)
        for level in sorted(setting.levels, reverse=True)
        for method in (setting.methods if level > 0 else setting.clean_methods)
        for seed in setting.seeds
    ]
    if setting.ablation:
        level = max(setting.levels)
        for start in ABLATION_STARTS:
            if start == -0.3 and "curriculum" in setting.methods:
                continue  # the main table's curriculum row (gin/curriculum.gin starts at -0.3)
            runs += [
                Run(
                    f"{level_tag(level)}-curriculum_g{start:+.1f}-s{seed}",
                    "curriculum",
                    level,
                    seed,
                    gamma_start=start,
                )
                for seed in setting.seeds
            ]
    return runs


# --------------------------------------------------------------------------------- data
def data_paths(results_dir: str) -> Dict[str, str]:
    data = os.path.join(results_dir, "data")
    return {
        "root": data,
        "test": os.path.join(data, "test_clean"),
        "probe_train": os.path.join(data, "probe_train_clean"),
    }


def train_dir(results_dir: str, level: float) -> str:
    return os.path.join(data_paths(results_dir)["root"], f"train_{level_tag(level)}")


def data_jobs(results_dir: str, setting: Setting) -> List[dict]:
    """write_synthetic keyword sets: one training set per level (same seed, so the same videos;
    only the misaligned pairs differ), clean held-out test and probe-training sets (other seeds).
    """
    common = dict(num_classes=8, num_frames=16, frame_size=40, num_shards=4)
    jobs = [
        dict(
            out_dir=train_dir(results_dir, level),
            num_clips=setting.train_clips,
            misaligned_fraction=level,
            seed=0,
            **common,
        )
        for level in setting.levels
    ]
    paths = data_paths(results_dir)
    jobs.append(
        dict(
            out_dir=paths["test"],
            num_clips=setting.test_clips,
            misaligned_fraction=0.0,
            seed=1001,
            **common,
        )
    )
    jobs.append(
        dict(
            out_dir=paths["probe_train"],
            num_clips=setting.probe_train_clips,
            misaligned_fraction=0.0,
            seed=1002,
            **common,
        )
    )
    return jobs


def pattern(out_dir: str) -> str:
    return os.path.join(out_dir, "synthetic-*.tfrecord")


# ------------------------------------------------------------------------------ one run
def run_spec(run: Run, setting: Setting, results_dir: str) -> dict:
    """What the worker subprocess needs: gin files and bindings, data, evaluation sizes."""
    data = train_dir(results_dir, run.level)
    cosine_level = max(setting.levels)
    params = [
        f"TRAIN_STEPS={setting.steps}",
        f"GLOBAL_BATCH={setting.batch}",
        "pretrain.synthetic_data=None",
        "PretrainConfig.sources=(@train/SourceConfig(),)",
        f"train/SourceConfig.file_pattern='{pattern(data)}'",
        "train/SourceConfig.name='synthetic'",
        f"PretrainConfig.vocab_path='{os.path.join(data, 'vocab.txt')}'",
        f"PretrainConfig.seed={run.seed}",
        f"pretrain.seed={run.seed}",
        f"Harmonization.granularity='{setting.granularity}'",
        f"build_vatt.preset='{setting.preset}'",
        f"pretrain.checkpoint_every={max(1, setting.steps // setting.cosine_checkpoints)}",
        f"pretrain.keep_checkpoints={setting.cosine_checkpoints + 1}",
        f"pretrain.summary_every={max(1, min(25, setting.steps // 4))}",
        "pretrain.progress=False",
    ]
    if run.gamma_start is not None:
        params += [f"Harmonization.gamma_start={run.gamma_start}", "Harmonization.gamma_end=0.0"]
    params += list(setting.extra_gin)
    paths = data_paths(results_dir)
    return dict(
        run=dataclasses.asdict(run),
        model_dir=os.path.join(results_dir, "runs", run.name),
        gin_files=[METHODS[run.method][0], "gin/demo.gin"],
        gin_params=params,
        vocab=os.path.join(data, "vocab.txt"),
        test_pattern=pattern(paths["test"]),
        probe_train_pattern=pattern(paths["probe_train"]),
        cosine_pattern=pattern(train_dir(results_dir, cosine_level)),
        cosine_clips=setting.cosine_probe_clips,
        batch=setting.batch,
        num_windows=setting.num_windows,
        granularity=setting.granularity,
        keep_checkpoints=setting.keep_checkpoints,
    )


def result_path(results_dir: str, run: Run) -> str:
    return os.path.join(results_dir, "runs", run.name, "result.json")


def execute(spec: dict) -> dict:
    """In a fresh process: pre-train, then evaluate; writes and returns result.json's dict."""
    import tensorflow as tf

    import gin
    from vatt_gh import configs, loop

    configs.parse_gin(spec["gin_files"], spec["gin_params"])
    model = loop.pretrain(spec["model_dir"], tf.distribute.get_strategy())
    result = {"run": spec["run"], "granularity": spec["granularity"]}
    result.update(training_record(spec["model_dir"]))
    result.update(evaluate(model, spec))  # gin still holds the run's PretrainConfig
    gin.clear_config()
    with open(os.path.join(spec["model_dir"], "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    if not spec.get("keep_checkpoints", True):  # events, config and result.json stay
        shutil.rmtree(os.path.join(spec["model_dir"], "checkpoints"), ignore_errors=True)
    return result


def training_record(model_dir: str) -> dict:
    """From the run's TensorBoard events: seconds per step (first summary, which holds the
    tracing, excluded) and the share of negative per-triplet cosines over all logged steps."""
    import tensorflow as tf

    from vatt_gh.evaluation import histories

    times = []
    log_dir = os.path.join(model_dir, "train")
    for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "train/loss_va" for v in event.summary.value):
                times.append((event.step, event.wall_time))
    times.sort()
    seconds = (
        (times[-1][1] - times[0][1]) / (times[-1][0] - times[0][0])
        if len(times) > 1
        else float("nan")
    )
    history = histories.read_histograms(log_dir)
    weights = history.counts / max(history.counts.sum(), 1.0)
    return {
        "seconds_per_step": seconds,
        "negative_share_training": float((history.fraction_negative * weights).sum()),
        "negative_share_last_step": float(history.fraction_negative[-1]),
    }


def evaluate(model, spec: dict) -> dict:
    """Per-triplet cosines of the probe clips at every kept checkpoint, then retrieval and
    linear probes on the clean held-out clips with the final weights (the trained model is
    restored from each checkpoint in place, so nothing is traced twice)."""
    import tensorflow as tf

    ckpt_dir = os.path.join(spec["model_dir"], "checkpoints")
    checkpoints = list(tf.train.get_checkpoint_state(ckpt_dir).all_model_checkpoint_paths)
    out = {"step": int(checkpoints[-1].rsplit("-", 1)[-1]), "cosines": []}
    for path in checkpoints:  # oldest first; the model ends restored to the newest
        tf.train.Checkpoint(model=model).restore(
            path
        ).expect_partial().assert_existing_objects_matched()
        out["cosines"].append(probe_cosines(model, spec, int(path.rsplit("-", 1)[-1])))
    out.update(held_out_metrics(model, spec))
    return out


def probe_cosines(model, spec: dict, step: int) -> dict:
    """cos(g_va, g_vt) per triplet of the first `cosine_clips` training clips of the most
    misaligned set (batches of the training batch size, training mode, nothing applied):
    ROC AUC for aligned vs misaligned and the share of negative cosines."""
    import tensorflow as tf

    from vatt_gh.data import pipeline
    from vatt_gh.evaluation import conflicts, features

    config = features.eval_config_for_run(
        spec["cosine_pattern"],
        spec["vocab"],
        num_windows=1,
        num_captions=pipeline.PretrainConfig().num_captions,
    )
    if not hasattr(model, "_reproduce_stats"):
        granularity = spec["granularity"]
        if granularity not in ("example", "example_fast"):
            granularity = "example"
        model._reproduce_stats = tf.function(  # traced once, reused for every checkpoint
            lambda data: model.gradient_stats(data, granularity=granularity)
        )
    cosines, aligned = [], []
    dataset = pipeline.eval_dataset(config, spec["batch"]).take(
        max(1, spec["cosine_clips"] // spec["batch"])
    )
    for batch in dataset:
        if int(batch["video"].shape[0]) < spec["batch"]:
            break
        data = {
            "video": batch["video"][:, 0],
            "audio": batch["audio"][:, 0],
            "text": batch["text"],
            "audio_mask": batch["audio_mask"],
            "text_mask": batch["text_mask"],
        }
        cosines.append(model._reproduce_stats(data)["cosine"].numpy())
        aligned.append((batch["aligned_va"].numpy() > 0.5) & (batch["aligned_vt"].numpy() > 0.5))
    cosines, aligned = np.concatenate(cosines), np.concatenate(aligned)
    return {
        "step": step,
        "num_triplets": int(len(cosines)),
        "auc": conflicts.alignment_auc(cosines, aligned, aligned),
        "negative_share": float(np.mean(cosines < 0)),
        "mean_cosine_aligned": float(np.mean(cosines[aligned])) if aligned.any() else None,
        "mean_cosine_misaligned": float(np.mean(cosines[~aligned])) if (~aligned).any() else None,
    }


def held_out_metrics(model, spec: dict) -> dict:
    """Zero-shot text-to-video retrieval and linear probes (video, audio) on clean clips."""
    from vatt_gh.data import pipeline
    from vatt_gh.evaluation import features, probe, retrieval

    def extract(file_pattern, modalities):
        config = features.eval_config_for_run(
            file_pattern, spec["vocab"], num_windows=spec["num_windows"]
        )
        return features.extract(
            model.vatt, pipeline.eval_dataset(config, spec["batch"]), modalities
        )

    test = extract(spec["test_pattern"], ("video", "audio", "text"))
    train = extract(spec["probe_train_pattern"], ("video", "audio"))
    r = retrieval.retrieval_metrics(
        features.clip_embeddings(test["video_vt"]),
        features.text_embeddings(test["text_vt"], test["text_mask"]),
    )
    out = {"retrieval": {k: v for k, v in r.items() if k.startswith("t2v/") or k == "num_clips"}}
    for modality in ("video", "audio"):
        key = f"{modality}_features"
        out[f"probe_{modality}"] = probe.linear_probe_metrics(
            train[key], train["label"], test[key], test["label"], num_classes=8
        )
    return out


# ---------------------------------------------------------------------------- the table
COLUMNS = (  # (header, getter over a result dict, digits)
    ("t2v R@1", lambda r: r["retrieval"]["t2v/R@1"], 1),
    ("t2v R@5", lambda r: r["retrieval"]["t2v/R@5"], 1),
    ("t2v R@10", lambda r: r["retrieval"]["t2v/R@10"], 1),
    ("t2v MedR", lambda r: r["retrieval"]["t2v/median_rank"], 1),
    ("probe video top1", lambda r: r["probe_video"]["top1"], 1),
    ("probe audio top1", lambda r: r["probe_audio"]["top1"], 1),
    ("cos AUC (mid)", lambda r: r["cosines"][0]["auc"] if len(r["cosines"]) > 1 else None, 2),
    ("cos AUC (end)", lambda r: r["cosines"][-1]["auc"], 2),
    ("cos<0 share (train)", lambda r: r["negative_share_training"], 2),
    ("cos<0 share (probe, end)", lambda r: r["cosines"][-1]["negative_share"], 2),
    ("ms/step", lambda r: 1000.0 * r["seconds_per_step"], 0),
)


def row_label(run: dict) -> str:
    if run["gamma_start"] is not None:
        return f"curriculum ({run['gamma_start']:+.1f}, 0)"
    return run["method"]


def group(results: List[dict]) -> Dict[tuple, List[dict]]:
    """(level, row label) -> the results of its seeds, in plan order."""
    groups: Dict[tuple, List[dict]] = {}
    for result in results:
        groups.setdefault((result["run"]["level"], row_label(result["run"])), []).append(result)
    return groups


def spread(values: Sequence[Optional[float]]) -> Optional[dict]:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "n": len(values),
    }


def summarize(results: List[dict]) -> Dict[str, dict]:
    """{'<level>|<row>': {column: spread}} plus the cost relative to `sum` at the same level."""
    summary = {}
    groups = group(results)
    for (level, label), rows in groups.items():
        cells = {header: spread([_safe(get, r) for r in rows]) for header, get, _ in COLUMNS}
        base = groups.get((level, "sum"))
        if base:
            reference = np.mean([r["seconds_per_step"] for r in base])
            cells["x sum"] = spread([r["seconds_per_step"] / reference for r in rows])
        summary[f"{level}|{label}"] = cells
    return summary


def _safe(get, result):
    try:
        return get(result)
    except (KeyError, IndexError, TypeError):
        return None


def _cell(stats: Optional[dict], digits: int) -> str:
    if stats is None:
        return "n/a"
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown_table(summary: Dict[str, dict], rows: Sequence[str]) -> str:
    """Rows 'level|label' in the given order; cells 'mean ± std' over seeds."""
    headers = ["misaligned", "method"] + [h for h, _, _ in COLUMNS] + ["x sum"]
    digits = {h: d for h, _, d in COLUMNS}
    digits["x sum"] = 2
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for key in rows:
        level, label = key.split("|", 1)
        cells = summary[key]
        lines.append(
            "| "
            + " | ".join(
                [f"{100 * float(level):.0f}%", label]
                + [_cell(cells.get(h), digits[h]) for h in headers[2:]]
            )
            + " |"
        )
    return "\n".join(lines)


def cosine_figures(results: List[dict], results_dir: str, seed: int) -> List[str]:
    """Figure 4 per training level: one panel per method (seed `seed`), from the run's
    `harmonize/cosines` histograms."""
    from vatt_gh.evaluation import figures, histories

    written = []
    by_level: Dict[float, dict] = {}
    for result in results:
        run = result["run"]
        if run["seed"] != seed:
            continue
        log_dir = os.path.join(results_dir, "runs", run["name"], "train")
        by_level.setdefault(run["level"], {})[row_label(run)] = histories.read_histograms(log_dir)
    for level, panels in sorted(by_level.items()):
        path = os.path.join(results_dir, f"figure4_{level_tag(level)}.png")
        written.append(
            figures.cosine_bands(
                panels,
                path,
                f"cos(g_va, g_vt) per triplet over pre-training, "
                f"{100 * level:.0f}% misaligned, seed {seed}",
            )
        )
    return written
