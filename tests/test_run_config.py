"""Each start's operative config is kept, and a resume with another method, model, granularity
or data is refused (vatt_gh/run_config.py)."""

import os

import pytest

import gin
from vatt_gh import configs, pretraining, run_config
from vatt_gh.errors import ConfigError

FIRST = """
# Macros:
STEPS = 20

# Parameters for Harmonization:
Harmonization.granularity = 'group:8'
Harmonization.method = 'curriculum'
Harmonization.gamma_steps = %STEPS
pretrain.train_steps = %STEPS
PretrainConfig.sources = (@howto100m/SourceConfig(),)
howto100m/SourceConfig.file_pattern = \\
    'gs://b/train-*.tfrecord'
build_vatt.preset = 'medium'
"""


pytestmark = pytest.mark.usefixtures("clean_gin")


def test_changes_name_each_watched_binding():
    second = (
        FIRST.replace("'curriculum'", "'realign'")
        .replace("'gs://b/train-*.tfrecord'", "'gs://c/train-*.tfrecord'")
        .replace("build_vatt.preset = 'medium'", "build_vatt.preset = 'small'")
        .replace("STEPS = 20", "STEPS = 40")  # a longer run: not a watched change
    )
    assert run_config.changes(FIRST, second) == [
        "method: Harmonization.method 'curriculum' -> 'realign'",
        "model: build_vatt.preset 'medium' -> 'small'",
        "data: howto100m/SourceConfig.file_pattern 'gs://b/train-*.tfrecord' -> "
        "'gs://c/train-*.tfrecord'",
    ]
    assert run_config.changes(FIRST, FIRST.replace("STEPS = 20", "STEPS = 40")) == []
    third = FIRST.replace("Harmonization.granularity = 'group:8'\n", "")
    assert run_config.changes(FIRST, third) == [
        "granularity: Harmonization.granularity 'group:8' -> unset"
    ]


def test_config_path_picks_the_start_that_trained_a_checkpoint(tmp_path):
    model_dir = str(tmp_path)
    first = os.path.join(model_dir, "operative_config.gin")
    assert run_config.config_path(model_dir) == first  # nothing recorded yet
    for name in ("operative_config.gin", "operative_config-20.gin", "operative_config-100.gin"):
        (tmp_path / name).write_text("")
    at = lambda name: os.path.join(model_dir, name)
    assert run_config.config_path(model_dir, 20) == first  # steps 1-20: the first start
    assert run_config.config_path(model_dir, 21) == at("operative_config-20.gin")
    assert run_config.config_path(model_dir, 100) == at("operative_config-20.gin")
    assert run_config.config_path(model_dir, 101) == at("operative_config-100.gin")
    assert run_config.config_path(model_dir) == at("operative_config-100.gin")  # the newest


FAST = [
    "TRAIN_STEPS = 2",
    "GLOBAL_BATCH = 8",
    "SyntheticData.num_clips = 16",
    "SyntheticData.num_shards = 2",
    "build_vatt.num_layers = 1",
    "make_optimizer.warmup_steps = 1",
    "pretrain.checkpoint_every = 2",
    "pretrain.summary_every = 2",
    "pretrain.progress = False",
]


def _pretrain(model_dir, method_gin, steps, **kwargs):
    gin.clear_config()
    configs.parse_gin([method_gin, "gin/demo.gin"], FAST + [f"TRAIN_STEPS = {steps}"])
    return pretraining.pretrain(model_dir, **kwargs)


@pytest.mark.slow
def test_resume_with_another_method_is_refused_then_allowed_and_both_configs_kept(tmp_path):
    model_dir = str(tmp_path / "run")
    _pretrain(model_dir, "gin/curriculum.gin", 2)
    with pytest.raises(ConfigError) as raised:
        _pretrain(model_dir, "gin/realign.gin", 4)
    line = str(raised.value).splitlines()[0]
    assert line.startswith(
        "resuming after step 2 with another configuration than operative_config.gin: "
        "method: Harmonization.method 'curriculum' -> 'realign'. Pass --allow_config_change"
    ), line
    assert not os.path.exists(os.path.join(model_dir, "checkpoints", "ckpt-4.index"))
    assert not os.path.exists(os.path.join(model_dir, "operative_config-2.gin"))

    _pretrain(model_dir, "gin/realign.gin", 4, allow_config_change=True)
    assert os.path.exists(os.path.join(model_dir, "checkpoints", "ckpt-4.index"))
    with open(os.path.join(model_dir, "operative_config.gin")) as f:
        assert "Harmonization.method = 'curriculum'" in f.read()
    with open(os.path.join(model_dir, "operative_config-2.gin")) as f:
        assert "Harmonization.method = 'realign'" in f.read()
    # The evaluation tools' config of the newest checkpoint is the second start's.
    configs.parse_run(model_dir)
    assert gin.query_parameter("Harmonization.method") == "realign"
    configs.parse_run(model_dir, os.path.join(model_dir, "checkpoints", "ckpt-2"))
    assert gin.query_parameter("Harmonization.method") == "curriculum"
