"""Table 1 end to end: the tiny pre-trained run (tests/eval_fixtures.py), five benchmarks in their
published layouts converted by `benchmark_build`, a Kinetics-400 fine-tuning result, then ONE
`tools/evaluate.py --benchmarks_dir` run -> table1.json, table1.md, TensorBoard scalars. Also
`--retrieval_name` equal to `--probe_name` (both results kept)."""

import json
import os

import benchmark_layouts as layouts
import numpy as np
import pytest
from eval_fixtures import read_scalars, run_tool

from vatt_gh.data import benchmark_build, benchmarks
from vatt_gh.evaluation import table1


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    config = benchmark_build.EncodeConfig(fps=10.0, short_side=40, videos_per_shard=4)
    writers = {
        "ucf101": layouts.write_ucf101,
        "hmdb51": layouts.write_hmdb51,
        "esc50": layouts.write_esc50,
        "youcook2": layouts.write_youcook2,
        "msrvtt": layouts.write_msrvtt,
        "kinetics400": layouts.write_kinetics400,
    }
    for name, write in writers.items():
        write(str(root / "raw" / name))
        listing = benchmarks.list_benchmark(name, str(root / "raw" / name))
        benchmark_build.build_benchmark(listing, str(root / "benchmarks" / name), config)
    finetune = root / "finetune"
    finetune.mkdir()
    (finetune / "metrics-3.json").write_text(json.dumps({"step": 3, "top1": 11.0, "top5": 50.0}))
    (finetune / "metrics-7.json").write_text(json.dumps({"step": 7, "top1": 12.5, "top5": 62.5}))
    return root


def test_table1_row_from_the_benchmarks(tiny_run, converted, tmp_path):
    out = tmp_path / "table"
    result = run_tool(
        [
            "tools/evaluate.py",
            "--model_dir=" + tiny_run["model_dir"],
            f"--benchmarks_dir={converted / 'benchmarks'}",
            f"--finetune_dir={converted / 'finetune'}",
            f"--table_dir={out}",
            f"--output_json={tmp_path / 'metrics.json'}",
            "--num_windows=2",
        ]
    )
    results = json.loads((out / "table1.json").read_text())
    assert results["step"] == 4
    for name, parts in (("ucf101", 3), ("hmdb51", 3), ("esc50", 5)):
        splits = {k: v for k, v in results[name].items() if k != "mean"}
        assert len(splits) == parts
        for key in ("top1", "top5"):  # the mean over splits / folds, recomputed here
            assert results[name]["mean"][key] == pytest.approx(
                np.mean([s[key] for s in splits.values()])
            )
    # counts as the lists say: UCF101 3 test videos per split, HMDB51 2, ESC50 2 per fold
    assert [results["ucf101"][f"split{k}"]["num_test_clips"] for k in (1, 2, 3)] == [3, 3, 3]
    assert results["ucf101"]["split1"]["num_train_clips"] == 3
    assert [results["hmdb51"][f"split{k}"]["num_test_clips"] for k in (1, 2, 3)] == [2, 2, 2]
    assert all(results["esc50"][f"fold{k}"]["num_test_clips"] == 2 for k in range(1, 6))
    assert results["esc50"]["fold1"]["num_train_clips"] == 8
    # the two ESC50 classes are 300 Hz and 1 kHz tones: audio-only features tell them apart
    assert results["esc50"]["mean"]["top1"] >= 75.0, results["esc50"]
    assert results["msrvtt"]["1k-A"]["num_clips"] == 3
    assert results["youcook2"]["validation"]["num_clips"] == 4  # one clip per segment
    assert results["kinetics400"]["train/val"]["top1"] == 12.5  # the newest fine-tuning result
    for name in ("msrvtt", "youcook2"):
        metrics = next(iter(results[name].values()))
        n = metrics["num_clips"]
        assert 1 <= metrics["t2v/median_rank"] <= n and 0 <= metrics["t2v/R@1"] <= 100

    lines = (out / "table1.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| pre-training"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [
        h for _, _, h in table1.COLUMNS
    ]
    ours = next(line for line in lines if line.startswith("| ours (step 4)"))
    cells = [c.strip() for c in ours.strip("|").split("|")][1:]
    assert cells[0] == f"{results['ucf101']['mean']['top1']:.2f}"
    assert cells[4:6] == ["12.50", "62.50"]
    assert cells[8] == f"{results['msrvtt']['1k-A']['t2v/median_rank']:.2f}"
    assert cells[10] == f"{results['esc50']['mean']['top1']:.2f}"
    paper = next(line for line in lines if line.startswith("| paper, HT100M: VATT |"))
    assert "| 78.53 | 95.24 | 57.36 |" in paper and paper.rstrip().endswith("| 91.75 |")
    assert "ours (step 4)" in result.stdout and "table1.md" in result.stdout
    scalars = read_scalars(os.path.join(tiny_run["model_dir"], "eval"))
    assert scalars["eval/table1/ucf101/mean/top1"] == (
        4,
        pytest.approx(results["ucf101"]["mean"]["top1"]),
    )
    assert scalars["eval/table1/esc50/fold3/top1"][1] == pytest.approx(
        results["esc50"]["fold3"]["top1"]
    )


def test_retrieval_name_equal_to_probe_name(tiny_run, tmp_path):
    output = tmp_path / "metrics.json"
    result = run_tool(
        [
            "tools/evaluate.py",
            "--model_dir=" + tiny_run["model_dir"],
            "--retrieval_pattern=" + tiny_run["pattern"],
            "--probe_train_pattern=" + tiny_run["train_pattern"],
            "--probe_test_pattern=" + tiny_run["test_pattern"],
            "--retrieval_name=same",
            "--probe_name=same",
            "--probe_features=video",
            "--num_windows=1",
            "--max_clips=16",
            "--probe_classifier=vatt",
            "--probe_epochs=3",
            "--output_json=" + str(output),
        ]
    )
    metrics = json.loads(output.read_text())["same"]
    assert metrics["num_clips"] == 16 and "t2v/median_rank" in metrics  # retrieval kept
    assert metrics["video"]["num_test_clips"] == 16  # probe beside it
    assert metrics["video"]["classifier"] == "vatt"
    assert "text -> video" in result.stdout and "linear probe" in result.stdout
