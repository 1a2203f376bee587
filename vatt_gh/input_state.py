"""The input position of a pre-training run, saved next to every checkpoint (a few numbers).

Each process saves, for the input pipelines it runs, `InputPosition` (examples given,
and per source: records consumed, and at the start of the current shuffle block the group of
shards, the records consumed from each and the shard read next) in
`<model_dir>/checkpoints/input/<task>/position-<step>.json`, written before the checkpoint of
that step. On restart every process rebuilds its pipelines from the position of the restored
step: it reads again at most the open group of shards and one shuffle block, at any step.
Without a saved position (a checkpoint from before, or SIGKILL between a preemption save and
its position) the position is recomputed from the step by counting the records of the shards
passed (each shard read once, nothing decoded): as exact, slower.
"""

import json
import os
from typing import Dict, Optional

import tensorflow as tf
from absl import logging

from vatt_gh.data.configs import PretrainConfig
from vatt_gh.data.position import InputPosition
from vatt_gh.data.pretrain_input import advance_position
from vatt_gh.data.read import ShardCounts

SUBDIR = "input"


class InputState:
    """Positions of this process's input pipelines, advanced by arithmetic at every save."""

    def __init__(
        self,
        config: PretrainConfig,
        global_batch_size: int,
        ckpt_dir: str,
        task: str,
        keep: int = 5,
    ):
        self.config = config
        self.global_batch_size = global_batch_size
        self.directory = os.path.join(ckpt_dir, SUBDIR, task)
        self.keep = keep
        self.counts = ShardCounts()
        self._saved: Dict[int, InputPosition] = {}  # of step self._step
        self._step = 0
        self._pipelines: Dict[int, int] = {}  # pipeline id -> number of input pipelines

    def _path(self, step: int) -> str:
        return os.path.join(self.directory, f"position-{step}.json")

    def _per_pipeline(self, num_pipelines: int) -> int:
        if self.global_batch_size % num_pipelines:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} does not split over "
                f"{num_pipelines} input pipelines"
            )
        return self.global_batch_size // num_pipelines

    def restore(self, step: int) -> None:
        """Read the positions saved with checkpoint `step` (if any)."""
        self._step, self._saved = step, {}
        if step == 0:
            return
        path = self._path(step)
        if tf.io.gfile.exists(path):
            try:
                with tf.io.gfile.GFile(path) as f:
                    saved = json.load(f)
                self._saved = {
                    int(pid): InputPosition.from_json(p) for pid, p in saved["pipelines"].items()
                }
                logging.info("input position of step %d read from %s", step, path)
            except (ValueError, KeyError, TypeError, AttributeError, tf.errors.OpError) as e:
                self._saved = {}  # recomputed, as when it is missing
                logging.warning(
                    "the input position %s is unreadable (%s: %s): counting the records of "
                    "the shards already read to find it (exact, slower)",
                    path,
                    type(e).__name__,
                    (str(e).splitlines() or [""])[0],
                )
        else:
            logging.warning(
                "no input position saved with step %d (%s): counting the records of the "
                "shards already read to find it (exact, slower)",
                step,
                path,
            )

    def position(self, pipeline_id: int, num_pipelines: int) -> InputPosition:
        """Where pipeline `pipeline_id` starts (the `position_fn` of the input_fn)."""
        self._pipelines[pipeline_id] = num_pipelines
        if pipeline_id not in self._saved:
            self._saved[pipeline_id] = advance_position(
                self.config,
                None,
                self._step * self._per_pipeline(num_pipelines),
                pipeline_id,
                num_pipelines,
                self.counts,
            )
        return self._saved[pipeline_id]

    def save(self, step: int) -> Optional[str]:
        """Advance every pipeline's position to `step` and write it (call before the
        checkpoint of `step`). Returns the file written."""
        if not self._pipelines:
            return None
        positions = {}
        for pid, num in sorted(self._pipelines.items()):
            examples = (step - self._step) * self._per_pipeline(num)
            positions[pid] = advance_position(
                self.config, self._saved[pid], examples, pid, num, self.counts
            )
        self._saved, self._step = positions, step
        path = self._path(step)
        tf.io.gfile.makedirs(self.directory)
        tmp = f"{path}.tmp"
        with tf.io.gfile.GFile(tmp, "w") as f:
            json.dump(
                {"step": step, "pipelines": {str(k): p.to_json() for k, p in positions.items()}},
                f,
            )
        tf.io.gfile.rename(tmp, path, overwrite=True)
        self._prune()
        return path

    def _prune(self):
        steps = sorted(
            int(os.path.basename(p)[len("position-") : -len(".json")])
            for p in tf.io.gfile.glob(os.path.join(self.directory, "position-*.json"))
        )
        for old in steps[: -self.keep] if self.keep else []:
            tf.io.gfile.remove(self._path(old))
