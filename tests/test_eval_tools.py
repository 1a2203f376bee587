"""Each evaluation tool end to end on one tiny pre-trained checkpoint and synthetic records
(subprocesses: every tool parses its own gin). Shares `tiny_run` (tests/eval_fixtures.py)."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from eval_fixtures import assert_png, read_scalars, run_tool


def test_evaluate_retrieval_and_probes(tiny_run, tmp_path):
    output = tmp_path / "metrics.json"
    result = run_tool(
        [
            "tools/evaluate.py",
            "--model_dir=" + tiny_run["model_dir"],
            "--retrieval_pattern=" + tiny_run["pattern"],
            "--retrieval_name=synthetic",
            "--probe_train_pattern=" + tiny_run["train_pattern"],
            "--probe_test_pattern=" + tiny_run["test_pattern"],
            "--probe_name=labelled",
            "--num_windows=2",
            "--batch_size=16",
            "--output_json=" + str(output),
        ]
    )
    metrics = json.loads(output.read_text())
    printed = result.stdout.splitlines()  # tables to 0.1%, the JSON at full precision
    assert f"metrics written to {output}" in printed
    t2v = next(line.split() for line in printed if line.strip().startswith("text -> video"))
    assert t2v[3:6] == [f"{metrics['synthetic'][f't2v/R@{k}']:.1f}" for k in (1, 5, 10)]
    video = next(l.split() for l in printed if l.startswith("  video ") and "->" not in l)
    assert video[1] == f"{metrics['labelled']['video']['top1']:.1f}"
    assert metrics["step"] == 4
    r = metrics["synthetic"]
    assert r["num_clips"] == 32 and r["num_windows"] == 2
    for direction in ("t2v", "v2t"):
        recalls = [r[f"{direction}/R@{k}"] for k in (1, 5, 10)]
        assert recalls == sorted(recalls) and 0 <= recalls[0] and recalls[-1] <= 100
        assert 1 <= r[f"{direction}/median_rank"] <= 32
        # Recall@K is a multiple of 1/32 (one query = 3.125%).
        assert all(abs(v / 3.125 - round(v / 3.125)) < 1e-9 for v in recalls)
    video = metrics["labelled"]["video"]
    assert video["num_train_clips"] == 32 and video["num_test_clips"] == 32
    assert video["chance"] == 25.0
    assert video["top1"] >= 75.0, video  # 4 classes of distinct colour and shape
    assert video["top5"] == 100.0  # 4 classes: top-5 always holds
    assert "audio" in metrics["labelled"]
    scalars = read_scalars(os.path.join(tiny_run["model_dir"], "eval"))
    assert scalars["eval/synthetic/t2v/R@10"] == (4, pytest.approx(r["t2v/R@10"]))
    assert scalars["eval/labelled/video/top1"] == (4, pytest.approx(video["top1"]))


def test_evaluate_errors_name_the_flag(tiny_run, tmp_path):
    result = run_tool(
        [
            "tools/evaluate.py",
            "--model_dir=" + tiny_run["model_dir"],
            "--retrieval_pattern=" + str(tmp_path / "none-*.tfrecord"),
        ],
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: --retrieval_pattern: ")
    result = run_tool(
        [
            "tools/evaluate.py",
            "--model_dir=" + str(tmp_path),
            "--retrieval_pattern=" + tiny_run["pattern"],
        ],
        check=False,
    )
    assert result.stderr.strip().splitlines()[-1].startswith("error: --model_dir ")


def test_finetune_beats_chance(tiny_run, tmp_path):
    out = tmp_path / "finetune"
    run_tool(
        [
            "tools/finetune.py",
            "--model_dir=" + tiny_run["model_dir"],
            "--output_dir=" + str(out),
            "--train_pattern=" + tiny_run["train_pattern"],
            "--test_pattern=" + tiny_run["test_pattern"],
            "--num_classes=%d" % tiny_run["num_classes"],
            "--gin_param=FinetuneConfig.train_steps=60",
            "--gin_param=FinetuneConfig.global_batch_size=8",
            "--gin_param=FinetuneConfig.warmup_steps=3",
            # 60 steps instead of VATT's 100k: 10x its learning rate (at 0.005 the classifier
            # barely leaves uniform logits in 60 steps: 28% top-1).
            "--gin_param=FinetuneConfig.learning_rate=0.05",
            "--gin_param=FinetuneConfig.summary_every=10",
            "--gin_param=FinetuneConfig.checkpoint_every=20",
            "--gin_param=FinetuneConfig.eval_windows=2",
        ]
    )
    metrics = json.loads((out / "metrics-60.json").read_text())
    assert metrics["num_test_clips"] == 32 and metrics["chance"] == 25.0
    assert metrics["top1"] >= 62.5, metrics  # chance is 25%
    assert tf.train.latest_checkpoint(str(out / "checkpoints")).endswith("ckpt-60")
    assert read_scalars(str(out / "eval"))["eval/finetune/top1"][0] == 60


MIRRORED_FINETUNE = """
import json, os, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from vatt_gh import configs, finetuning
from vatt_gh.evaluation import classifier
model_dir, train, test, out = sys.argv[1:5]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
configs.parse_run(model_dir)

def config(steps):
    return classifier.FinetuneConfig(train_steps=steps, global_batch_size=8, warmup_steps=2,
                                   eval_windows=1, summary_every=2, checkpoint_every=100)

first = finetuning.finetune(model_dir, out, train, test, 4, strategy, config=config(4))
second = finetuning.finetune(model_dir, out, train, test, 4, strategy, config=config(6))
pretrained = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir + "/checkpoints"))
tuned = tf.train.load_checkpoint(os.path.join(out, "checkpoints", "ckpt-4"))
names = [n for n, dtype in pretrained.get_variable_to_dtype_map().items()
         if n.startswith("model/vatt/") and n.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
         and "OPTIMIZER_SLOT" not in n and dtype.is_floating]
changed = sorted(n for n in names
                 if not np.array_equal(pretrained.get_tensor(n), tuned.get_tensor(n)))
print("RESULT " + json.dumps(dict(replicas=strategy.num_replicas_in_sync, first=first,
                                  second=second, changed=changed, total=len(names))))
"""


def test_finetune_mirrored_two_replicas_trains_backbone_and_resumes(tiny_run, tmp_path):
    out = tmp_path / "mirrored"
    result = run_tool(
        [
            "-c",
            MIRRORED_FINETUNE,
            tiny_run["model_dir"],
            tiny_run["train_pattern"],
            tiny_run["test_pattern"],
            str(out),
        ]
    )
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT ") :])
    assert r["replicas"] == 2
    assert (r["first"]["start_step"], r["first"]["step"]) == (0, 4)
    assert (r["second"]["start_step"], r["second"]["step"]) == (4, 6)  # resumed from ckpt-4
    assert {"ckpt-4.index", "ckpt-6.index"} <= set(os.listdir(out / "checkpoints"))
    changed = " ".join(r["changed"])
    assert "video_tokenizer" in changed and "encoder" in changed  # the backbone trains
    assert "text_tokenizer" not in changed and "audio_tokenizer" not in changed


def test_inspect_conflicts_csv_html_pngs_auc(tiny_run, tmp_path):
    out = tmp_path / "conflicts"
    result = run_tool(
        [
            "tools/inspect_conflicts.py",
            "--model_dir=" + tiny_run["model_dir"],
            "--pattern=" + tiny_run["pattern"],
            "--output_dir=" + str(out),
            "--batch_size=8",
            "--fraction=0.1",
            "--frames_shown=4",
        ]
    )
    assert "ROC AUC" in result.stdout
    truth = {c["clip_id"]: c for c in json.load(open(tiny_run["metadata"]))["clips"]}
    with open(out / "cosines.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["clip_id"] for r in rows) == sorted(truth)  # every clip once
    for r in rows:  # ground truth matched
        c = truth[r["clip_id"]]
        assert (int(r["label"]), int(r["aligned_va"]), int(r["aligned_vt"])) == (
            c["label"],
            c["aligned_va"],
            c["aligned_vt"],
        )
        assert -1.0 <= float(r["cosine"]) <= 1.0
    cosines = np.array([float(r["cosine"]) for r in rows])
    assert np.std(cosines) > 0  # per-triplet values
    # The top and bottom 10% (4 of 32 each), all named on the page.
    order = np.argsort(cosines, kind="stable")
    selected = [rows[i]["clip_id"] for i in list(order[:4]) + list(order[-4:])]
    page = (out / "conflicts.html").read_text()
    for clip_id in selected:
        assert f"<code>{clip_id}</code>" in page, clip_id
    assert page.count("<code>synthetic_") == 8
    assert page.count("data:image/jpeg;base64,") == 8 * 4
    # AUC: both-aligned vs the rest, recomputed here as the Mann-Whitney statistic.
    summary = json.loads((out / "summary.json").read_text())
    aligned = np.array([int(r["aligned_va"]) and int(r["aligned_vt"]) for r in rows], bool)
    pos, neg = cosines[aligned], cosines[~aligned]
    expected = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert summary["auc_aligned"] == pytest.approx(expected, abs=1e-3)
    assert summary["num_triplets"] == 32 and summary["num_selected_each"] == 4
    for name in ("top.png", "bottom.png", "cosines.png"):
        assert_png(str(out / name))
    assert summary["granularity"] == "example"
    # --granularity=group:1 (per-layer statistics; checked against materialised gradients
    # in test_group_stats.py) on the same checkpoint.
    fast = tmp_path / "fast"
    run_tool(
        [
            "tools/inspect_conflicts.py",
            "--model_dir=" + tiny_run["model_dir"],
            "--pattern=" + tiny_run["pattern"],
            "--output_dir=" + str(fast),
            "--batch_size=8",
            "--max_clips=8",
            "--granularity=group:1",
        ]
    )
    assert json.loads((fast / "summary.json").read_text())["granularity"] == "group:1"
    with open(fast / "cosines.csv") as f:
        fast_cosines = np.array([float(r["cosine"]) for r in csv.DictReader(f)])
    assert len(fast_cosines) == 8 and np.all(np.abs(fast_cosines) <= 1) and np.std(fast_cosines) > 0


def test_plot_cosines_from_event_files(tiny_run, tmp_path):
    output = tmp_path / "figure4.png"
    result = run_tool(
        [
            "tools/plot_cosines.py",
            "--run=baseline=" + tiny_run["model_dir"],
            "--run=again=" + tiny_run["model_dir"],
            "--output=" + str(output),
            "--min_cosines=1",  # one cosine per summary step: no pooling
        ]
    )
    assert "baseline: 2 points to step 4 (2 summary steps)" in result.stdout
    height, width, _ = assert_png(str(output))
    assert width > height  # two panels side by side
    with open(tmp_path / "figure4.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["step"]) for r in rows] == [
        ("baseline", "2"),
        ("baseline", "4"),
        ("again", "2"),
        ("again", "4"),
    ]


def test_plot_tsne(tiny_run, tmp_path):
    output = tmp_path / "figure5.png"
    result = run_tool(
        [
            "tools/plot_tsne.py",
            "--model_dir=" + tiny_run["model_dir"],
            "--pattern=" + tiny_run["pattern"],
            "--output=" + str(output),
            "--num_windows=1",
            "--batch_size=16",
        ]
    )
    assert "32 clips" in result.stdout
    assert_png(str(output))
    with open(tmp_path / "figure5.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 64
    assert sorted(r["modality"] for r in rows) == ["text"] * 32 + ["video"] * 32
    assert all(np.isfinite(float(r["x"])) and np.isfinite(float(r["y"])) for r in rows)
