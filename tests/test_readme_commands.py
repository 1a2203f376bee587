"""README.md's pre-training commands as a newcomer types them, in CI size.

The demo command is read from the README (its first `python tools/pretrain.py` line with
gin/demo.gin) and run through that entry point, as written, in an environment without the test
suite's TF_CPP_MIN_LOG_LEVEL, with a few --gin_param overrides for speed. Its terminal output
must be the header, what the run is doing, the progress lines and the footer: nothing from
TensorFlow. Then the card command without data (the gs://YOUR_BUCKET placeholder) and a re-run
of the finished run.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
FAST = [
    f"--gin_param=TRAIN_STEPS={STEPS}",
    "--gin_param=GLOBAL_BATCH=8",
    "--gin_param=SyntheticData.num_clips=32",
    "--gin_param=pretrain.summary_every=2",
    "--gin_param=pretrain.checkpoint_every=2",
    "--gin_param=build_vatt.num_layers=1",
]


def readme_command(*must_contain):
    """The first README line that runs tools/pretrain.py and contains every `must_contain`."""
    with open(os.path.join(REPO, "README.md")) as f:
        for line in f:
            words = shlex.split(line.strip()) if line.startswith("    python ") else []
            if words[:2] == ["python", "tools/pretrain.py"] and all(
                any(m in w for w in words) for m in must_contain
            ):
                return words
    raise AssertionError(f"README.md has no `python tools/pretrain.py` line with {must_contain}")


def run(words, model_dir, *extra, timeout=900):
    """`words` with python = this interpreter and --model_dir replaced, from the repo root."""
    args = [sys.executable] + [w for w in words[1:] if not w.startswith("--model_dir")]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        args + [f"--model_dir={model_dir}", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_demo_command_as_written_prints_header_progress_footer_only(tmp_path):
    words = readme_command("gin/demo.gin")
    assert words[2:4] == ["--gin_file=gin/curriculum.gin", "--gin_file=gin/demo.gin"]
    model_dir = str(tmp_path / "demo")
    proc = run(words, model_dir, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr[-3000:]  # no TensorFlow noise, no warnings
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("vatt-gh pre-training: gin/curriculum.gin + gin/demo.gin")
    assert lines[0].endswith(f"-> {model_dir}")
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == [f"2/{STEPS}", f"{STEPS}/{STEPS}"]
    assert all(re.search(r"\d+\.\d steps/s$", line) for line in progress), progress
    before = lines[1 : lines.index(progress[0])]  # what the run does before the first step
    assert any("synthetic data" in line for line in before), before
    assert any("tracing" in line for line in before), before
    assert lines[-2].startswith(f"done: {STEPS} steps in "), lines[-2]
    assert "loss_va" in lines[-2] and "loss_vt" in lines[-2]
    assert lines[-1].startswith(f"TensorBoard logs: {os.path.join(model_dir, 'train')}")

    again = run(words, model_dir, *FAST, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr == "", again.stderr[-3000:]
    said = again.stdout.strip().splitlines()
    assert said[1] == f"the run in {model_dir} is already complete ({STEPS}/{STEPS} steps).", said
    assert said[-1].startswith(f"TensorBoard logs: {os.path.join(model_dir, 'train')}")


def test_card_command_without_data_says_what_to_do_in_one_line(tmp_path):
    words = readme_command("gin/curriculum.gin", "RUN_DIR")
    model_dir = tmp_path / "run"
    proc = run(words, str(model_dir), timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no TensorFlow noise
    error = proc.stderr.strip()
    assert error.startswith("error: ") and "gs://YOUR_BUCKET" in error, error
    assert "tools/build_dataset.py" in error and "gin/data/howto100m.gin" in error, error
    assert "--gin_file=gin/demo.gin" in error, error
    assert "libcurl" not in error and "0x" not in error
    assert not model_dir.exists()  # no empty run directory left behind
