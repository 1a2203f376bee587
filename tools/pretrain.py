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
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def parse_gin(files, params):
    """Parse gin files/bindings with includes resolved from the repo; errors name the culprit."""
    import gin
    import vatt_gh.loop  # noqa: F401  registers every configurable
    gin.add_config_file_search_path(REPO)
    for path in files:
        if not os.path.exists(path) and not os.path.exists(os.path.join(REPO, path)):
            raise SystemExit(f"error: --gin_file {path!r} does not exist")
    files = [p if os.path.exists(p) else os.path.join(REPO, p) for p in files]
    try:
        gin.parse_config_files_and_bindings(files, params)
    except (ValueError, KeyError, IOError) as e:
        raise SystemExit(f"error: bad gin configuration: {e}") from None


def make_strategy(name, tpu):
    """The tf.distribute strategy named by --strategy; a clear error if it cannot start."""
    import tensorflow as tf
    try:
        if name == "default":
            return tf.distribute.get_strategy()
        if name == "mirrored":
            return tf.distribute.MirroredStrategy()
        if name == "multi_worker":
            if "TF_CONFIG" not in os.environ:
                raise ValueError("TF_CONFIG is not set (it lists the workers and this task)")
            return tf.distribute.MultiWorkerMirroredStrategy()
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        tf.config.set_soft_device_placement(True)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise SystemExit(f"error: --strategy={name} cannot start: {e}") from None


def main(argv):
    del argv
    parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    from vatt_gh import loop
    strategy = make_strategy(FLAGS.strategy, FLAGS.tpu)
    logging.info("strategy %s with %d replica(s)", FLAGS.strategy,
                 strategy.num_replicas_in_sync)
    try:
        loop.pretrain(FLAGS.model_dir, strategy)
    except loop.ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"\nDone. TensorBoard logs: {os.path.join(FLAGS.model_dir, 'train')}\n"
          f"  open them with: tensorboard --logdir={FLAGS.model_dir}")


if __name__ == "__main__":
    app.run(main)
