r"""Pre-train VATT with cross-modality gradient harmonization.

    python tools/pretrain.py --gin_file=gin/curriculum.gin --model_dir=/tmp/vatt_curriculum
    python tools/pretrain.py --gin_file=gin/curriculum.gin --gin_file=gin/demo.gin \
        --model_dir=/tmp/vatt_demo                       # the embedded demo (synthetic data)
    python tools/pretrain.py --gin_file=gin/both.gin --strategy=tpu --tpu=local \
        --model_dir=gs://bucket/runs/both                # Cloud TPU VM

Resumes from the newest checkpoint in --model_dir. TensorBoard: tensorboard --logdir=MODEL_DIR.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # runnable from a checkout without installing

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. Harmonization.method='both'.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and the operative config.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name or 'local' (TPU VM), with --strategy=tpu.")
flags.DEFINE_integer("collective_timeout", 900, "multi_worker: seconds a collective may wait for "
                     "the other workers before the run fails (a stalled peer), 0 = forever.")
flags.DEFINE_integer("heartbeat_timeout", 60, "multi_worker: seconds a worker's heartbeat may be "
                     "silent before it is declared dead; 0 = TF's default (10 s, short for busy "
                     "hosts: a beat every 5 s).")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import tensorflow as tf
    from vatt_gh import launch, loop
    try:
        launch.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
        strategy = launch.make_strategy(FLAGS.strategy, FLAGS.tpu,
                                        timeout_seconds=FLAGS.collective_timeout or None,
                                        heartbeat_seconds=FLAGS.heartbeat_timeout or None)
        logging.info("strategy %s with %d replica(s)", FLAGS.strategy,
                     strategy.num_replicas_in_sync)
        loop.pretrain(FLAGS.model_dir, strategy)
    except (launch.LaunchError, loop.ConfigError, loop.TrainingError) as e:
        raise SystemExit(f"error: {e}") from None
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as e:
        if FLAGS.strategy != "multi_worker":
            raise
        raise SystemExit(
            f"error: a collective with the other workers failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}): a worker stalled or died (--collective_timeout="
            f"{FLAGS.collective_timeout}s, --heartbeat_timeout={FLAGS.heartbeat_timeout}s). Restart every worker with the same command; the "
            "run resumes from the newest checkpoint.") from None
    print(f"\nDone. TensorBoard logs: {os.path.join(FLAGS.model_dir, 'train')}\n"
          f"  open them with: tensorboard --logdir={FLAGS.model_dir}")


if __name__ == "__main__":
    app.run(main)
