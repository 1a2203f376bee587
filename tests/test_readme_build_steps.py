"""README.md's "build first" steps, as written and in order, on real media: PyAV-made .mp4
files with a HowTo100M-style raw_caption.json, then the vocabulary and the word table, which
gin/model/tiny.gin takes as built (a small pre-training run on them: tests/test_tiny_model.py)."""

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from test_data_builder import _make_mp4

from vatt_gh import configs, provision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_build_steps():
    """The README's `python tools/build_*.py` lines of the Pre-training section, in order."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Pre-training") :]
    section = section[: section.index("\n## ", 1)]
    return [
        shlex.split(line.strip())
        for line in section.splitlines()
        if line.startswith("    python tools/build_")
    ]


@pytest.mark.slow  # three tools, each importing TensorFlow: about a minute on 2 cores
def test_readme_build_steps_run_in_order_on_real_media(tmp_path, clean_gin):
    steps = readme_build_steps()
    assert [s[1] for s in steps] == [
        "tools/build_dataset.py",
        "tools/build_vocab.py",
        "tools/build_word_vectors.py",
    ]
    videos, data = tmp_path / "videos", tmp_path / "data"
    videos.mkdir()
    narrations = {}
    for name, rgb, hz in (("vidA", (220, 30, 30), 440.0), ("vidB", (30, 30, 220), 1000.0)):
        _make_mp4(str(videos / f"{name}.mp4"), rgb, hz, seconds=9.0)
        narrations[name] = {
            "start": [0.5, 3.0, 6.0],
            "end": [2.5, 5.5, 8.5],
            "text": [f"{name} pours water", "stir the pot slowly", "serve the soup"],
        }
    captions = tmp_path / "raw_caption.json"
    captions.write_text(json.dumps(narrations))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for words in steps:
        args = [
            w.replace("VIDEO_DIR", str(videos))
            .replace("DATA_DIR", str(data))
            .replace("raw_caption.json", str(captions))
            for w in words[1:]
        ]
        proc = subprocess.run(
            [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, (args[0], proc.stderr[-2000:])
        noise = proc.stdout + proc.stderr
        assert "FutureWarning" not in noise and " INFO " not in noise, (args[0], noise[-2000:])
    shards = sorted(os.listdir(data))
    assert any(s.startswith("train-") and s.endswith(".tfrecord") for s in shards), shards
    with open(data / "vocab.txt") as f:
        vocab = f.read().split()
    assert {"stir", "soup", "water"} <= set(vocab)
    table = np.load(data / "word_vectors.npy")
    assert np.isfinite(table).all() and np.abs(table[vocab.index("soup")]).sum() > 0
    # The table fits gin/model/tiny.gin as built, and no path is a placeholder any more.
    configs.parse_gin(
        ["gin/curriculum.gin", "gin/model/tiny.gin"],
        [
            f"howto100m/SourceConfig.file_pattern = '{data}/train-*.tfrecord'",
            f"PretrainConfig.vocab_path = '{data}/vocab.txt'",
            f"build_vatt.word_vectors_path = '{data}/word_vectors.npy'",
        ],
    )
    from vatt_gh.data.configs import PretrainConfig

    provision.check_no_placeholders(PretrainConfig())
    provision.check_word_table()
