"""Every numeric setting of a run is checked before training, with a one-line error naming it
(run in-process: the errors come before any model is built)."""

import os

import pytest

import gin
from vatt_gh import configs, pretraining
from vatt_gh.errors import ConfigError

pytestmark = pytest.mark.usefixtures("clean_gin")


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
        pretraining.pretrain(model_dir)
    first = str(raised.value).splitlines()[0]
    assert first.startswith(message), first
    assert not os.path.exists(os.path.join(model_dir, "checkpoints"))  # nothing trained


PAPER_SCHEDULE = [  # gin/base.gin's optimizer: Adam 1e-4, 10k warm-up, cosine to 5e-5 over 500k
    "make_optimizer.learning_rate = 1e-4",
    "make_optimizer.warmup_steps = 10000",
    "make_optimizer.decay_steps = 500000",
    "make_optimizer.end_learning_rate = 5e-5",
]


def test_a_warmup_longer_than_the_run_is_refused_before_anything(tmp_path):
    """20 steps of the paper's schedule: lr(19) = 19/10000 x cosine(10000) = 1.9e-7 by hand
    (5e-5 + 5e-5 x (1 + cos(pi x 10000 / 500000)) / 2 = 9.995e-5 at the end of warm-up)."""
    configs.parse_gin(["gin/curriculum.gin", "gin/demo.gin"], PAPER_SCHEDULE + ["TRAIN_STEPS = 20"])
    model_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError) as raised:
        pretraining.pretrain(model_dir)
    line = str(raised.value).splitlines()[0]
    assert line.startswith(
        "the learning rate never exceeds 1.9e-07 in the run's 20 steps (pretrain.train_steps), "
        "under 1% of the schedule's peak 1.0e-04: make_optimizer.warmup_steps = 10000 warms up over more "
        "steps than the run has. Lower make_optimizer.warmup_steps or raise pretrain.train_steps"
    ), line
    assert line.endswith("or pass --allow_low_learning_rate to train anyway")
    assert not os.path.exists(model_dir)  # refused before the run directory is made


def test_a_warmup_that_fits_is_not_refused(tmp_path):
    """The demo's 50-step warm-up over a 4-step run (decayed to lr / 10 by step 4) reaches
    3/50 = 6% of its peak, lr / 10 at step 50: allowed."""
    configs.parse_gin(["gin/curriculum.gin", "gin/demo.gin"], ["TRAIN_STEPS = 4"])
    from vatt_gh import provision

    provision.check_pretrain_learning_rate(4)  # no error
    gin.clear_config()
    configs.parse_gin(["gin/curriculum.gin", "gin/demo.gin"], PAPER_SCHEDULE)
    provision.check_pretrain_learning_rate(200)  # 200/10000 = 2% of the peak: allowed
    with pytest.raises(ConfigError, match="never exceeds 9.9e-07 in the run's 100 steps"):
        provision.check_pretrain_learning_rate(100)  # lr(99) = 99/10000 x 9.995e-5


def test_allow_low_learning_rate_goes_on(tmp_path):
    """With the override the run goes past the check: here to the next one, a granularity that
    does not tile the batch (cheap: nothing is built before it)."""
    configs.parse_gin(
        ["gin/curriculum.gin", "gin/demo.gin"],
        PAPER_SCHEDULE + ["TRAIN_STEPS = 20", "Harmonization.granularity = 'group:3'"],
    )
    with pytest.raises(ConfigError, match="never exceeds"):
        pretraining.pretrain(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="group:3"):
        pretraining.pretrain(str(tmp_path / "run"), allow_low_learning_rate=True)


def test_finetuning_at_lr_zero_is_refused():
    """FinetuneConfig's 2500-step warm-up and a 20-step run: the cosine over 20 steps has decayed
    to end_learning_rate = 0 by step 2500, so every step's learning rate is 0 exactly."""
    from vatt_gh import finetuning
    from vatt_gh.evaluation.classifier import FinetuneConfig

    config = FinetuneConfig(train_steps=20)
    with pytest.raises(ConfigError) as raised:
        finetuning.finetune("unused", "unused", "unused", "unused", 8, None, config=config)
    line = str(raised.value).splitlines()[0]
    assert line.startswith(
        "the learning rate never exceeds 0.0e+00 in the run's 20 steps "
        "(FinetuneConfig.train_steps), under 1% of the schedule's peak 0.0e+00: "
        "FinetuneConfig.warmup_steps = 2500 warms up over more steps than the run has."
    ), line


def test_finetuning_with_two_test_crops_is_refused_before_training():
    """A bad FinetuneConfig.eval_crops is found before any training (it is read at the end)."""
    from vatt_gh import finetuning
    from vatt_gh.evaluation.classifier import FinetuneConfig

    config = FinetuneConfig(train_steps=20, warmup_steps=2, eval_crops=2)
    with pytest.raises(ConfigError, match=r"^FinetuneConfig.eval_crops = 2: must be 1 .* or 3"):
        finetuning.finetune("unused", "unused", "unused", "unused", 8, None, config=config)
