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

from vatt_gh import strategy_flags  # noqa: E402

flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings, e.g. Harmonization.method='both'.")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and the operative config.")
strategy_flags.define_strategy_flags()
flags.adopt_module_key_flags(strategy_flags)  # listed by --help
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from vatt_gh import configs, loop
    from vatt_gh.errors import ConfigError, LaunchError, TrainingError

    try:
        with strategy_flags.peer_failures_as(TrainingError):
            configs.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
            strategy = strategy_flags.make_strategy()
            logging.info(
                "strategy %s with %d replica(s)", FLAGS.strategy, strategy.num_replicas_in_sync
            )
            loop.pretrain(FLAGS.model_dir, strategy)
    except (LaunchError, ConfigError, TrainingError) as e:
        raise SystemExit(f"error: {e}") from None
    print(
        f"\nDone. TensorBoard logs: {os.path.join(FLAGS.model_dir, 'train')}\n"
        f"  open them with: tensorboard --logdir={FLAGS.model_dir}"
    )


if __name__ == "__main__":
    app.run(main)
