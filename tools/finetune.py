r"""Fine-tune a pre-trained video backbone with a linear classifier (paper Table 1, Kinetics-400).

    python tools/finetune.py --model_dir=/tmp/vatt_gh_demo --output_dir=/tmp/vatt_gh_demo/finetune \
        --train_pattern=/data/kinetics400/train-*.tfrecord \
        --test_pattern=/data/kinetics400/val-*.tfrecord --num_classes=400

The recipe (SGD momentum 0.9, cosine schedule with warm-up, label smoothing 0.1, backbone
gradients clipped by global norm, DropToken off: every token, as evaluation) is `FinetuneConfig` in
vatt_gh/evaluation/classifier.py; change it with --gin_param, e.g.
--gin_param=FinetuneConfig.train_steps=2000 (with a warm-up, FinetuneConfig.warmup_steps =
2500, that fits: a run whose learning rate stays under 1% of the schedule's peak throughout is refused
before training unless --allow_low_learning_rate). The run is pre-training's loop (vatt_gh/finetuning.py):
it resumes exactly from --output_dir/checkpoints after a kill, and on SIGTERM saves at the next
step then exits with code 42. Prints a progress line per summary; reports top-1 / top-5 with
FinetuneConfig.eval_windows windows x eval_crops crops (VATT's 4 x 3) per test clip averaged, in
--output_dir/metrics-<step>.json and TensorBoard (--output_dir/train, --output_dir/eval).
"""

from absl import app, flags

from vatt_gh import console, strategy_flags
from vatt_gh.evaluation import run_flags

console.exit_on_sigterm()  # from the first moment: exit 42 until training's handler takes over

run_flags.define_run_flags(
    model_dir_help="Pre-training run to start from.",
    gin_param_help="Gin bindings, e.g. FinetuneConfig.train_steps=2000.",
)
flags.adopt_module_key_flags(run_flags)  # listed by --help
flags.DEFINE_string("output_dir", None, "Fine-tuning checkpoints, summaries and metrics.")
flags.DEFINE_string("train_pattern", None, "Labelled training records.")
flags.DEFINE_string("test_pattern", None, "Labelled test records.")
flags.DEFINE_integer("num_classes", None, "Number of classes (labels in [0, num_classes)).")
flags.DEFINE_bool(
    "allow_low_learning_rate",
    False,
    "Train even when the schedule keeps the learning rate under 1% of the schedule's peak for the whole "
    "run (e.g. FinetuneConfig.warmup_steps longer than FinetuneConfig.train_steps).",
)
strategy_flags.define_strategy_flags()
flags.adopt_module_key_flags(strategy_flags)  # listed by --help
for _name in ("model_dir", "output_dir", "train_pattern", "test_pattern", "num_classes"):
    flags.mark_flag_as_required(_name)
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS


def run_finetune():
    import tensorflow as tf

    from vatt_gh import configs, finetuning
    from vatt_gh.errors import ConfigError, LaunchError, TrainingError
    from vatt_gh.evaluation import run

    if FLAGS.num_classes < 2:
        raise run.EvalError(f"--num_classes={FLAGS.num_classes}: need at least 2")
    run.check_pattern("train_pattern", FLAGS.train_pattern)
    run.check_pattern("test_pattern", FLAGS.test_pattern)
    try:
        strategy = strategy_flags.make_strategy()
    except LaunchError as e:
        raise run.EvalError(str(e)) from None
    configs.parse_run(FLAGS.model_dir, FLAGS.checkpoint, FLAGS.gin_file, FLAGS.gin_param)
    try:
        with strategy_flags.peer_failures_as(run.EvalError):
            return finetuning.finetune(
                FLAGS.model_dir,
                FLAGS.output_dir,
                FLAGS.train_pattern,
                FLAGS.test_pattern,
                FLAGS.num_classes,
                strategy,
                checkpoint=FLAGS.checkpoint,
                allow_low_learning_rate=FLAGS.allow_low_learning_rate,
            )
    except (ConfigError, TrainingError) as e:
        raise run.EvalError(str(e)) from None
    except tf.errors.InvalidArgumentError as e:
        raise run.EvalError(e.message.splitlines()[0]) from None


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    console.exit_on_sigterm()  # exit 42 until training's pre-emption handler takes over
    from vatt_gh.data.rejects import BadRecordError
    from vatt_gh.evaluation import run

    try:
        metrics = run_finetune()
    except (run.EvalError, BadRecordError) as e:
        raise SystemExit(f"error: {e}") from None
    print(
        f"\nfine-tuned to step {metrics['step']}: top-1 {metrics['top1']:.2f}%  "
        f"top-5 {metrics['top5']:.2f}%  (chance {metrics['chance']:.2f}%, "
        f"{metrics['num_test_clips']} test clips)\n  written to {FLAGS.output_dir}"
    )


if __name__ == "__main__":
    app.run(main)
