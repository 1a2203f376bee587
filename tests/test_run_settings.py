"""Every numeric setting of a run is checked before training, with a one-line error naming it
(run in-process: the errors come before any model is built)."""

import os

import pytest

import gin
from vatt_gh import configs, loop
from vatt_gh.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize(
    "binding,message",
    [
        ("make_optimizer.learning_rate = -6e-6", "make_optimizer.learning_rate = -6e-06: must be"),
        ("make_optimizer.warmup_steps = -1", "make_optimizer.warmup_steps = -1: must be"),
        ("make_optimizer.decay_steps = 0", "make_optimizer.decay_steps = 0: must be"),
        ("make_optimizer.epsilon = 0.0", "make_optimizer.epsilon = 0.0: must be a number > 0"),
        ("make_optimizer.end_learning_rate = 1.0", "make_optimizer.end_learning_rate = 1.0 is"),
        ("pretrain.summary_every = 0", "pretrain.summary_every = 0: must be an integer >= 1"),
        ("pretrain.checkpoint_every = 0", "pretrain.checkpoint_every = 0: must be an integer"),
        ("GLOBAL_BATCH = 0", "pretrain.global_batch_size = 0: must be an integer >= 1"),
        ("GLOBAL_BATCH = -4", "pretrain.global_batch_size = -4: must be an integer >= 1"),
        ("TRAIN_STEPS = 2.5", "pretrain.train_steps = 2.5: must be an integer >= 1"),
        ("pretrain.keep_checkpoints = 0", "pretrain.keep_checkpoints = 0: must be"),
        ("pretrain.max_nonfinite_in_a_row = 0", "pretrain.max_nonfinite_in_a_row = 0: must"),
        ("SyntheticData.num_shards = 0", "SyntheticData.num_shards = 0: must be"),
        ("SyntheticData.misaligned_fraction = 1.5", "SyntheticData.misaligned_fraction = 1.5"),
        ("SyntheticData.word_norm = 0.0", "SyntheticData.word_norm = 0.0: must be a number > 0"),
        ("SyntheticData.word_norm = -25.0", "SyntheticData.word_norm = -25.0: must be a number"),
        ("PretrainConfig.num_frames = 0", "PretrainConfig.num_frames = 0: must be"),
        ("PretrainConfig.max_frame_pixels = -1", "PretrainConfig.max_frame_pixels = -1: must"),
        ("build_vatt.precision = 'float16'", "build_vatt.precision = 'float16': choose one of"),
    ],
)
def test_numeric_settings_fail_before_training(tmp_path, binding, message):
    configs.parse_gin(["gin/curriculum.gin", "gin/demo.gin"], [binding])
    model_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError) as raised:
        loop.pretrain(model_dir)
    first = str(raised.value).splitlines()[0]
    assert first.startswith(message), first
    assert not os.path.exists(os.path.join(model_dir, "checkpoints"))  # nothing trained
