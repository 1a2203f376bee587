"""tools/pretrain.py end to end: every method config, tiny model, synthetic TFRecords."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
# (config, gamma_start, gamma_end): the curriculum schedule each config must log.
CONFIGS = [
    ("baseline", None, None),
    ("reweight_va", None, None),
    ("reweight_vt", None, None),
    ("realign", None, None),
    ("curriculum", -0.3, 0.0),
    ("both", -0.3, 0.0),
    ("gradvac", None, None),
]
SCALARS = {
    "loss_va",
    "loss_vt",
    "learning_rate",
    "gamma",
    "cosine",
    "projected",
    "dropped",
    "norm_va",
    "norm_vt",
    "skipped_all_dropped",
    "skipped_nonfinite",
    "seconds_per_step",
}
SMALL = [
    "--gin_param=GLOBAL_BATCH=8",
    "--gin_param=SyntheticData.num_clips=32",
    "--gin_param=SyntheticData.num_shards=2",
    "--gin_param=pretrain.summary_every=2",
    "--gin_param=pretrain.checkpoint_every=2",
    "--gin_param=build_vatt.num_layers=1",
]


def pretrain(model_dir, *args, steps=STEPS, timeout=600):
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "pretrain.py"),
        f"--model_dir={model_dir}",
        f"--gin_param=TRAIN_STEPS={steps}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def read_events(log_dir):
    """{tag: {step: value}} from the TF2 summary event files (scalars and histograms)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return out


@pytest.mark.parametrize("config,gamma_start,gamma_end", CONFIGS)
def test_method_config_end_to_end(tmp_path, config, gamma_start, gamma_end):
    model_dir = str(tmp_path / config)
    proc = pretrain(model_dir, f"--gin_file=gin/{config}.gin", "--gin_file=gin/demo.gin", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(os.path.join(model_dir, "train"))
    assert SCALARS <= {tag.split("/", 1)[1] for tag in events if tag.startswith("train/")}
    seconds = events["train/seconds_per_step"]
    assert seconds[2] > seconds[STEPS] > 0  # the first window includes tracing
    for step in (2, STEPS):
        assert np.isfinite(events["train/loss_va"][step]) and events["train/loss_va"][step] > 0
        cosines = events["harmonize/cosines"][step]  # histogram buckets (left, right, count)
        # demo.gin: group:1, so 8 cosines a step; every step of the 2-step window, or (sum,
        # reweight: one backward pass) only the step that ends it.
        constant = config in ("baseline", "reweight_va", "reweight_vt")
        assert cosines.shape[-1] == 3 and cosines[:, 2].sum() == (8 if constant else 16)
        # The gamma a step used is the schedule at the step index before it completed.
        if gamma_start is not None:
            want = gamma_start + (gamma_end - gamma_start) * (step - 1) / STEPS
            np.testing.assert_allclose(events["train/gamma"][step], want, atol=1e-6)
    operative = open(os.path.join(model_dir, "operative_config.gin")).read()
    assert "Harmonization.method" in operative and "build_vatt.preset = 'tiny'" in operative
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith(f"-{STEPS}")


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--gin_file=gin/curriculum.gin", "--gin_param=Harmonization.methd='both'"],
            "doesn't have a parameter named 'methd'",
        ),
        (
            ["--gin_file=gin/curriculum.gin", "--gin_param=Harmonization.method='pcgrad'"],
            "unknown harmonization method 'pcgrad'",
        ),
        (["--gin_file=gin/no_such.gin"], "--gin_file 'gin/no_such.gin' does not exist"),
        (
            [
                "--gin_file=gin/curriculum.gin",
                "--gin_param=howto100m/SourceConfig.file_pattern='/nonexistent/shard-*.tfrecord'",
                "--gin_param=PretrainConfig.vocab_path='/nonexistent/vocab.txt'",
                "--gin_param=build_vatt.word_vectors_path=None",
            ],
            "/nonexistent/shard-*.tfrecord",
        ),
        (
            [
                "--gin_file=gin/curriculum.gin",
                "--gin_param=howto100m/SourceConfig.file_pattern='/nonexistent/shard-*.tfrecord'",
                "--gin_param=PretrainConfig.vocab_path='/nonexistent/vocab.txt'",
            ],
            "'gs://YOUR_BUCKET/howto100m/word_vectors.npy' is a placeholder",
        ),
        (
            [
                "--gin_file=gin/curriculum.gin",
                "--gin_file=gin/demo.gin",
                "--gin_param=Harmonization.granularity='group:3'",
            ],
            "does not split into groups of 3",
        ),
        (
            ["--gin_file=gin/curriculum.gin", "--gin_file=gin/demo.gin", "--strategy=multi_worker"],
            "--strategy=multi_worker cannot start: TF_CONFIG is not set",
        ),
    ],
)
def test_bad_configuration_is_named_before_training(tmp_path, args, message):
    # the paper's 10k-step warm-up over this 4-step run is refused on its own (test_run_settings)
    proc = pretrain(str(tmp_path / "run"), *args, "--allow_low_learning_rate", timeout=180)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_unwritable_model_dir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = pretrain(
        str(blocker / "run"),
        "--gin_file=gin/curriculum.gin",
        "--gin_file=gin/demo.gin",
        timeout=180,
    )
    assert proc.returncode != 0
    assert f"--model_dir '{blocker / 'run'}' cannot be written" in proc.stderr, proc.stderr[-2000:]


def test_workers_probing_one_model_dir_at_once_do_not_trip_each_other(tmp_path):
    """Every worker of a multi-worker run checks the shared --model_dir as it starts."""
    from concurrent.futures import ThreadPoolExecutor

    from vatt_gh import provision

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: provision.check_writable(str(tmp_path)), range(400)))
    assert os.listdir(tmp_path) == []  # every probe removed


def test_a_peer_failure_becomes_one_line_only_under_multi_worker():
    from absl import flags
    from absl.testing import flagsaver

    from vatt_gh import strategy_flags

    if "strategy" not in flags.FLAGS:
        strategy_flags.define_strategy_flags()
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    stalled = tf.errors.DeadlineExceededError(None, None, "Collective ops timed out\nmore")
    with flagsaver.flagsaver(strategy="multi_worker", collective_timeout=7):
        with pytest.raises(ValueError) as raised:
            with strategy_flags.peer_failures_as(ValueError):
                raise stalled
        assert str(raised.value).startswith(
            "a collective with the other workers failed (DeadlineExceededError: Collective ops "
            "timed out): a worker stalled or died (--collective_timeout=7s"
        )
        assert "\n" not in str(raised.value) and raised.value.__cause__ is None
        with pytest.raises(KeyError):  # anything else passes through
            with strategy_flags.peer_failures_as(ValueError):
                raise KeyError("x")
    with flagsaver.flagsaver(strategy="mirrored"):
        with pytest.raises(tf.errors.DeadlineExceededError):
            with strategy_flags.peer_failures_as(ValueError):
                raise stalled


def test_the_strategy_flags_load_no_tensorflow():
    """A tool defines --strategy from cluster.STRATEGIES at import; TensorFlow (seconds) waits
    until a strategy starts, so --help and flag errors stay fast."""
    code = (
        "import sys\n"
        "from vatt_gh import strategy_flags\n"
        "strategy_flags.define_strategy_flags()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout[:500]


def test_an_unknown_strategy_is_one_line():
    from vatt_gh import cluster
    from vatt_gh.errors import LaunchError

    with pytest.raises(LaunchError, match=r"^--strategy='gpu_cluster': choose one of \("):
        cluster.make_strategy("gpu_cluster")


def test_heads_statistics_end_to_end(tmp_path):
    """tools/pretrain.py with both at group:1 and statistics='heads': it trains, TensorBoard
    names the statistics, the histogram holds every clip's cosine, the config records it."""
    model_dir = str(tmp_path / "heads")
    proc = pretrain(
        model_dir,
        "--gin_file=gin/both.gin",
        "--gin_file=gin/demo.gin",
        *SMALL,
        "--gin_param=Harmonization.statistics='heads'",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(os.path.join(model_dir, "train"))
    (setting,) = events["harmonize/settings"].values()
    assert "statistics 'heads'" in setting.item().decode()
    for step in (2, STEPS):
        assert np.isfinite(events["train/loss_vt"][step])
        assert events["harmonize/cosines"][step][:, 2].sum() == 16  # 8 clips x 2 steps
    operative = open(os.path.join(model_dir, "operative_config.gin")).read()
    assert "Harmonization.statistics = 'heads'" in operative
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith(f"-{STEPS}")
