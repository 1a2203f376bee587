"""Table 1's protocol on converted benchmarks (`tools/build_benchmark.py` output): per split / fold.

    results = evaluate_benchmarks(vatt, "/data/benchmarks", vocab, num_windows=4)

`benchmarks_dir` holds one directory per benchmark, each with its shards and `index.json`
(`vatt_gh.data.benchmark_build`). For each, the frozen model runs ONCE over every clip; the
features are then looked up by clip id for every split or fold:

  video_classification (UCF101, HMDB51)  linear probe on pooled video features, per official
                                          split: top-1 / top-5; "mean" over the splits
  audio_classification (ESC50)            linear probe on pooled audio features of audio-only
                                          records, leave one fold out: top-1 / top-5; "mean"
  retrieval (YouCook2, MSR-VTT)           zero-shot text-to-video (vt space): R@1/5/10, median
                                          rank (also video-to-text)
  finetune (Kinetics-400)                 the newest metrics-*.json of tools/finetune.py in
                                          `finetune_dir` (top-1 / top-5), when it exists (also
                                          without a converted kinetics400 directory)

Clips a split lists but the build could not provide (missing or undecodable files) are left out
and counted (`num_listed` vs `num_test_clips`).
"""

import glob
import json
import os
from typing import Callable, Dict, Optional

import numpy as np

from vatt_gh.data import benchmark_build
from vatt_gh.data.configs import EvalConfig
from vatt_gh.data.eval_input import eval_dataset
from vatt_gh.evaluation import features, probe, retrieval

KIND_MODALITIES = {
    "video_classification": ("video",),
    "audio_classification": ("audio",),
    "retrieval": ("video", "text"),
}


def benchmark_dirs(benchmarks_dir: str) -> Dict[str, str]:
    """{benchmark name: directory} of every sub-directory with an index.json (sorted)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(benchmarks_dir, "*", benchmark_build.INDEX))):
        directory = os.path.dirname(path)
        found[benchmark_build.read_index(directory)["benchmark"]] = directory
    if not found:
        raise ValueError(
            f"--benchmarks_dir={benchmarks_dir!r}: no <benchmark>/index.json below it "
            "(build them with tools/build_benchmark.py --out_dir=<benchmarks_dir>/<name>)"
        )
    return found


def _rows(arrays: Dict[str, np.ndarray], ids) -> np.ndarray:
    position = {clip_id: i for i, clip_id in enumerate(arrays["clip_id"])}
    return np.array([position[c] for c in ids if c in position], np.int64)


def _mean(results: Dict[str, dict], keys) -> dict:
    return {k: float(np.mean([r[k] for r in results.values()])) for k in keys}


def classification(
    arrays: Dict[str, np.ndarray], index: dict, modality: str, **probe_kwargs
) -> Dict[str, dict]:
    """Per split: linear probe top-1 / top-5 (percent) and clip counts; plus 'mean'."""
    out = {}
    num_classes = len(index["classes"]) or None
    key = f"{modality}_features"
    for name, split in index["splits"].items():
        train, test = _rows(arrays, split["train"]), _rows(arrays, split["test"])
        if not len(train) or not len(test):
            raise ValueError(f"{index['benchmark']} {name}: no train or test clip was converted")
        result = probe.linear_probe_metrics(
            arrays[key][train],
            arrays["label"][train],
            arrays[key][test],
            arrays["label"][test],
            num_classes,
            **probe_kwargs,
        )
        result["num_listed"] = len(split["test"])
        out[name] = result
    out["mean"] = _mean(out, ("top1", "top5"))
    return out


def zero_shot_retrieval(arrays: Dict[str, np.ndarray], index: dict) -> Dict[str, dict]:
    """Per split (one for YouCook2 / MSR-VTT): text-to-video and video-to-text metrics."""
    out = {}
    for name, split in index["splits"].items():
        rows = _rows(arrays, split["test"])
        video = features.clip_embeddings(arrays["video_vt"][rows])
        text = features.text_embeddings(arrays["text_vt"][rows], arrays["text_mask"][rows])
        result = retrieval.retrieval_metrics(video, text)
        result["num_listed"] = len(split["test"])
        out[name] = result
    return out


def finetune_result(finetune_dir: Optional[str]) -> Optional[dict]:
    """The newest `metrics-<step>.json` written by tools/finetune.py, or None."""
    if not finetune_dir:
        return None
    paths = glob.glob(os.path.join(finetune_dir, "metrics-*.json"))
    if not paths:
        return None

    def step(path):
        digits = os.path.basename(path)[len("metrics-") : -len(".json")]
        return int(digits) if digits.isdigit() else -1

    newest = max(paths, key=step)
    with open(newest) as f:
        result = json.load(f)
    return {"train/val": dict(result, source=newest)}


def evaluate_benchmarks(
    vatt,
    benchmarks_dir: str,
    vocab_path: str,
    *,
    num_windows: int = 4,
    batch_size: int = 8,
    finetune_dir: Optional[str] = None,
    max_clips: Optional[int] = None,
    say: Callable[[str], None] = lambda line: None,
    **probe_kwargs,
) -> Dict[str, dict]:
    """{benchmark: {split: metrics}} for every converted benchmark (see module doc)."""
    results = {}
    for name, directory in benchmark_dirs(benchmarks_dir).items():
        index = benchmark_build.read_index(directory)
        kind = index.get("kind")
        if kind == "finetune":
            result = finetune_result(finetune_dir)
            if result is None:
                where = f"in {finetune_dir}" if finetune_dir else "(no --finetune_dir)"
                say(f"{name}: no tools/finetune.py metrics-*.json {where}: left out")
            else:
                results[name] = result
            continue
        if kind not in KIND_MODALITIES:
            raise ValueError(f"{directory}/{benchmark_build.INDEX}: unknown kind {kind!r}")
        pattern = ",".join(os.path.join(directory, shard) for shard in index["shards"])
        config = features.eval_config_for_run(
            pattern,
            vocab_path,
            num_windows=num_windows,
            audio_only=kind == "audio_classification",
            fps=float(index.get("fps", EvalConfig().fps)),
        )
        say(f"{name}: features of {index['num_clips']} clip(s) ({num_windows} windows each)")
        arrays = features.extract(
            vatt, eval_dataset(config, batch_size), KIND_MODALITIES[kind], max_clips
        )
        if kind == "retrieval":
            results[name] = zero_shot_retrieval(arrays, index)
        else:
            modality = KIND_MODALITIES[kind][0]
            results[name] = classification(arrays, index, modality, **probe_kwargs)
    if "kinetics400" not in results and finetune_result(finetune_dir):
        results["kinetics400"] = finetune_result(finetune_dir)  # records built elsewhere
    return results
