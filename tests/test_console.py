"""What the tools print: one-line errors, durations, progress lines and evaluation tables."""

import os
import subprocess
import sys

import pytest

import gin
from vatt_gh import console, pretraining
from vatt_gh.evaluation import results


def test_one_line_folds_gin_errors(clean_gin):
    @gin.configurable("console_test_fn")
    def fn(a=1):
        raise ValueError("the message")

    with gin.unlock_config():
        gin.parse_config("console_test_fn.a = 2")
    with pytest.raises(ValueError) as raised:
        fn()
    assert "<function" in str(raised.value)  # gin's trail, as gin raises it
    assert console.one_line(raised.value) == "the message"
    with pytest.raises(ValueError) as raised:
        gin.parse_config("console_test_fn.b = 3")
    assert console.one_line(raised.value) == (
        "Configurable 'console_test_fn' doesn't have a parameter named 'b'. "
        "(in bindings string line 1: console_test_fn.b = 3)"
    )


def test_sigusr1_prints_every_threads_stack_and_the_process_goes_on():
    """A run that seems stuck: `kill -USR1 <pid>` says where each thread is, then it carries on."""
    code = (
        "import os, signal, threading, time\n"
        "from vatt_gh import console\n"
        "console.quiet()\n"
        "def waiting_in_a_helper(): time.sleep(5)\n"
        "threading.Thread(target=waiting_in_a_helper, daemon=True).start()\n"
        "time.sleep(0.2)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "time.sleep(0.2)\n"
        "print('still running')\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0 and proc.stdout == "still running\n", proc.stderr[-2000:]
    assert "in waiting_in_a_helper" in proc.stderr  # the other thread's stack too
    assert "Current thread" in proc.stderr


def test_duration():
    assert [console.duration(s) for s in (4.4, 59.6, 151, 3 * 3600 + 5 * 60)] == [
        "4 s",
        "1 min 00 s",
        "2 min 31 s",
        "3 h 05 min",
    ]


def test_progress_line_shows_the_rate_of_its_window():
    values = dict(
        loss_va=4.12345,
        loss_vt=3.5,
        cosine=-0.0123,
        dropped=0.25,
        gamma=-0.3,
        learning_rate=4e-4,
        seconds_per_step=0.125,
    )
    assert pretraining.pretrain_line(20, 600, values) == (
        "step  20/600  loss_va 4.1235  loss_vt 3.5000  cos -0.012  dropped 0.25  "
        "gamma -0.300  lr 4.0e-04  8.0 steps/s"
    )


def test_evaluation_tables():
    retrieval = {
        "num_clips": 32,
        "num_windows": 2,
        "t2v/R@1": 100 / 3,
        "t2v/R@5": 50.0,
        "t2v/R@10": 83.85416666666666,
        "t2v/median_rank": 5.5,
        "t2v/mean_rank": 7.123,
        "v2t/R@1": 0.0,
        "v2t/R@5": 12.5,
        "v2t/R@10": 25.0,
        "v2t/median_rank": 11.0,
        "v2t/mean_rank": 12.0,
    }
    assert results.retrieval_table("youcook2", retrieval).splitlines() == [
        "youcook2: zero-shot retrieval, 32 clips, 2 windows per clip averaged",
        "  recall in %     R@1   R@5  R@10  median rank  mean rank",
        "  text -> video  33.3  50.0  83.9          5.5        7.1",
        "  video -> text   0.0  12.5  25.0           11       12.0",
    ]
    probe = {
        m: dict(
            top1=t, top5=100.0, train_top1=100.0, chance=25.0, num_train_clips=32, num_test_clips=8
        )
        for m, t in (("video", 87.5), ("audio", 62.5))
    }
    assert results.probe_table("ucf", probe).splitlines() == [
        "ucf: linear probe on frozen features, 32 training / 8 test clips, chance 25.0%",
        "  accuracy in %  top-1  top-5  train top-1",
        "  video           87.5  100.0        100.0",
        "  audio           62.5  100.0        100.0",
    ]
