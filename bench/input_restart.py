r"""What a restart of the pre-training input costs, early and late in a run, on the demo's data.

Example:
  .venv/bin/python bench/input_restart.py --steps=10,100000 --replay_steps=10,200

For each step S: the input position of step S (arithmetic over the shards' record counts, as
`vatt_gh/input_state.py` computes it) and the seconds from building the pipeline at that
position to its first batch. For contrast, the old way (the pipeline from the start, skipping
the S batches already used) at --replay_steps. Demo settings: 512 synthetic clips in 4 shards,
global batch 32, shuffle blocks of 256 records, cycle_length 8. Prints a markdown table.
"""

import tempfile
import time

from absl import app, flags

from vatt_gh.data import synthetic
from vatt_gh.data.configs import PretrainConfig, SourceConfig
from vatt_gh.data.pretrain_input import advance_position, pretrain_dataset

FLAGS = flags.FLAGS
flags.DEFINE_list("steps", ["10", "100000"], "Steps to restart at from a saved position.")
flags.DEFINE_list("replay_steps", ["10", "200"], "Steps to restart at by replaying (old way).")
flags.DEFINE_integer("repeats", 3, "Restarts per step (the median is shown).")
BATCH = 32


def _first_batch_seconds(config, position, skip=0):
    start = time.perf_counter()
    ds = pretrain_dataset(config, BATCH, position=position).skip(skip)
    next(iter(ds))
    return time.perf_counter() - start


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        made = synthetic.write_synthetic(
            tmp, num_clips=512, num_frames=16, frame_size=40, num_shards=4
        )
        config = PretrainConfig(
            sources=(SourceConfig(made["file_pattern"]),),
            num_frames=8,
            crop_size=32,
            min_resize=40,
            num_captions=2,
            max_tokens=8,
            vocab_path=made["vocab_path"],
            shuffle_buffer=256,
        )
        _first_batch_seconds(config, None)  # warm-up: imports, tracing, page cache
        print("| restart | seconds to the first batch | position |")
        print("| --- | --- | --- |", flush=True)
        for step in [int(s) for s in FLAGS.steps]:
            position = advance_position(config, None, step * BATCH)
            times = sorted(_first_batch_seconds(config, position) for _ in range(FLAGS.repeats))
            seconds = times[len(times) // 2]
            print(f"| position of step {step} | {seconds:.2f} | {position.to_json()} |", flush=True)
        for step in [int(s) for s in FLAGS.replay_steps]:
            times = sorted(
                _first_batch_seconds(config, None, skip=step) for _ in range(FLAGS.repeats)
            )
            print(f"| replay of {step} steps | {times[len(times) // 2]:.2f} | |", flush=True)


if __name__ == "__main__":
    app.run(main)
