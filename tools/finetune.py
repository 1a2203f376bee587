r"""Fine-tune a pre-trained video backbone with a linear classifier (paper Table 1, Kinetics-400).

    python tools/finetune.py --model_dir=/tmp/vatt_gh_demo --output_dir=/tmp/vatt_gh_demo/finetune \
        --train_pattern=/data/kinetics400/train-*.tfrecord \
        --test_pattern=/data/kinetics400/val-*.tfrecord --num_classes=400

The recipe (SGD momentum 0.9, cosine schedule with warm-up, label smoothing 0.1, backbone
gradients clipped by global norm, DropToken on) is `FinetuneConfig` in
vatt_gh/evaluation/finetune.py; change it with --gin_param, e.g.
--gin_param=FinetuneConfig.train_steps=2000. Resumes from --output_dir/checkpoints. Reports top-1 /
top-5 with FinetuneConfig.eval_windows windows per test clip averaged, in
--output_dir/metrics-<step>.json and TensorBoard (--output_dir/train, --output_dir/eval).
"""

from absl import app, flags, logging

from vatt_gh import console, strategy_flags
from vatt_gh.evaluation import run_flags

run_flags.define_run_flags(
    model_dir_help="Pre-training run to start from.",
    gin_param_help="Gin bindings, e.g. FinetuneConfig.train_steps=2000.",
)
flags.adopt_module_key_flags(run_flags)  # listed by --help
flags.DEFINE_string("output_dir", None, "Fine-tuning checkpoints, summaries and metrics.")
flags.DEFINE_string("train_pattern", None, "Labelled training records.")
flags.DEFINE_string("test_pattern", None, "Labelled test records.")
flags.DEFINE_integer("num_classes", None, "Number of classes (labels in [0, num_classes)).")
strategy_flags.define_strategy_flags()
flags.adopt_module_key_flags(strategy_flags)  # listed by --help
for _name in ("model_dir", "output_dir", "train_pattern", "test_pattern", "num_classes"):
    flags.mark_flag_as_required(_name)
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS


def run_finetune():
    from vatt_gh import launch
    from vatt_gh.evaluation import finetune, run

    if FLAGS.num_classes < 2:
        raise run.EvalError(f"--num_classes={FLAGS.num_classes}: need at least 2")
    run.check_pattern("train_pattern", FLAGS.train_pattern)
    run.check_pattern("test_pattern", FLAGS.test_pattern)
    try:
        strategy = strategy_flags.make_strategy()
    except launch.LaunchError as e:
        raise run.EvalError(str(e)) from None
    with strategy.scope():
        pretrained, step = run.open_run(
            FLAGS.model_dir, FLAGS.checkpoint, FLAGS.gin_file, FLAGS.gin_param
        )
        config = finetune.FinetuneConfig()
        if config.global_batch_size % strategy.num_replicas_in_sync:
            raise run.EvalError(
                f"FinetuneConfig.global_batch_size={config.global_batch_size} "
                f"does not split over {strategy.num_replicas_in_sync} replicas"
            )
        model = finetune.VideoClassifier(pretrained.vatt, FLAGS.num_classes, config.head_dropout)
        model.classifier.build([None, pretrained.vatt.vatt_config.hidden_size])
    logging.info(
        "fine-tuning from %s (pre-training step %d) on %d replica(s)",
        FLAGS.model_dir,
        step,
        strategy.num_replicas_in_sync,
    )
    import tensorflow as tf

    try:
        with strategy_flags.peer_failures_as(run.EvalError):
            return finetune.finetune(
                model, FLAGS.train_pattern, FLAGS.test_pattern, FLAGS.output_dir, strategy, config
            )
    except tf.errors.InvalidArgumentError as e:
        raise run.EvalError(e.message.splitlines()[0]) from None


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    from vatt_gh.data import pipeline
    from vatt_gh.evaluation import run

    try:
        metrics = run_finetune()
    except (run.EvalError, pipeline.BadRecordError) as e:
        raise SystemExit(f"error: {e}") from None
    print(
        f"\nfine-tuned to step {metrics['step']}: top-1 {metrics['top1']:.2f}%  "
        f"top-5 {metrics['top5']:.2f}%  (chance {metrics['chance']:.2f}%, "
        f"{metrics['num_test_clips']} test clips)\n  written to {FLAGS.output_dir}"
    )


if __name__ == "__main__":
    app.run(main)
