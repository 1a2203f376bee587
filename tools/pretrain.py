r"""Pre-train VATT with cross-modality gradient harmonization.

    python tools/pretrain.py --gin_file=gin/curriculum.gin --model_dir=/tmp/vatt_curriculum
    python tools/pretrain.py --gin_file=gin/curriculum.gin --gin_file=gin/demo.gin \
        --model_dir=/tmp/vatt_demo                       # the embedded demo (synthetic data)
    NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so \
    python tools/pretrain.py --gin_file=gin/both.gin --strategy=tpu --tpu=local \
        --model_dir=gs://bucket/runs/both                # one Cloud TPU VM host (PJRT)

Resumes from the newest checkpoint in --model_dir. TensorBoard: .venv/bin/tensorboard --logdir=MODEL_DIR.
Prints a header, what it is doing, a progress line per summary and a footer; --verbose adds
TensorFlow's own log.
"""

import os

from absl import app, flags

from vatt_gh import console, strategy_flags

console.exit_on_sigterm()  # from the first moment: exit 42 until training's handler takes over

flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. Harmonization.method='both'.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and the operative config.")
flags.DEFINE_bool(
    "allow_low_learning_rate",
    False,
    "Train even when the schedule keeps the learning rate under 1% of the schedule's peak for the whole "
    "run (e.g. make_optimizer.warmup_steps longer than pretrain.train_steps).",
)
flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume with another method, model, granularity or data than the run's last start (each "
    "start's operative config is kept).",
)
strategy_flags.define_strategy_flags()
flags.adopt_module_key_flags(strategy_flags)  # listed by --help
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    console.exit_on_sigterm()  # exit 42 until training's pre-emption handler takes over
    from vatt_gh import configs, pretraining  # TensorFlow: after console.quiet
    from vatt_gh.errors import ConfigError, LaunchError, TrainingError

    console.say(
        f"vatt-gh pre-training: {' + '.join(FLAGS.gin_file) or 'no --gin_file'}"
        + "".join(f" {p}" for p in FLAGS.gin_param)
        + f" -> {FLAGS.model_dir}"
    )
    try:
        with strategy_flags.peer_failures_as(TrainingError):
            configs.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
            strategy = strategy_flags.make_strategy()
            if strategy.num_replicas_in_sync > 1:
                console.say(f"strategy {FLAGS.strategy}: {strategy.num_replicas_in_sync} replicas")
            pretraining.pretrain(
                FLAGS.model_dir,
                strategy,
                allow_low_learning_rate=FLAGS.allow_low_learning_rate,
                allow_config_change=FLAGS.allow_config_change,
            )
    except (LaunchError, ConfigError, TrainingError) as e:
        raise SystemExit(f"error: {console.one_line(e)}") from None
    console.say(
        f"TensorBoard logs: {os.path.join(FLAGS.model_dir, 'train')}  "
        f"({console.tensorboard_command(FLAGS.model_dir)})"
    )


if __name__ == "__main__":
    app.run(main)
