"""Checkpoint verification before restore and the clean-up of what killed runs leave behind,
on small checkpoints made here (a variable and a tf.data iterator)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from vatt_gh import checkpoints


def _checkpoint_with_iterator(prefix):
    """A checkpoint whose largest entry is a tf.data iterator's state (a variant tensor)."""
    ds = tf.data.Dataset.range(50_000).map(tf.strings.as_string).shuffle(4000, seed=0)
    iterator = iter(ds)
    next(iterator)
    variable = tf.Variable(np.arange(64, dtype=np.float32))
    return tf.train.Checkpoint(iterator=iterator, v=variable).write(prefix)


def _flip(path, offset, count=16):
    data = bytearray(open(path, "rb").read())
    data[offset : offset + count] = bytes(b ^ 0xFF for b in data[offset : offset + count])
    open(path, "wb").write(bytes(data))


def test_verify_reads_every_entry_including_the_iterator_state(tmp_path):
    path = _checkpoint_with_iterator(str(tmp_path / "ckpt-1"))
    checkpoints.verify_checkpoint(path)  # intact: no error
    data = path + ".data-00000-of-00001"
    size = os.path.getsize(data)
    _flip(data, size // 2)  # inside the iterator's shuffle buffer
    reader = tf.train.load_checkpoint(path)
    reader.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")  # a numeric-only check passes
    with pytest.raises(tf.errors.DataLossError):
        checkpoints.verify_checkpoint(path)


def test_leftovers_of_killed_runs_are_removed_on_start(tmp_path):
    ckpt_dir = str(tmp_path)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(1.0)), ckpt_dir, max_to_keep=2
    )
    for step in (4, 5, 6):
        manager.save(checkpoint_number=step)  # keeps 5 and 6
    os.makedirs(os.path.join(ckpt_dir, "ckpt-7_temp"))  # a save killed half-way
    open(os.path.join(ckpt_dir, "ckpt-7_temp", "part-00000-of-00001.data-00000-of-00001"), "w")
    aside = {s: f"ckpt-{s}.index.unreadable" for s in (1, 3, 5, 6)}
    for name in aside.values():
        open(os.path.join(ckpt_dir, name), "w").close()
    removed = checkpoints.remove_leftovers(ckpt_dir, keep=1)
    left = sorted(os.listdir(ckpt_dir))
    assert "ckpt-7_temp" not in left and os.path.join(ckpt_dir, "ckpt-7_temp") in removed
    # Set-aside checkpoints: older than the oldest kept (5) go, and only the newest one stays.
    assert [n for n in left if n.endswith(".unreadable")] == [aside[6]]
    assert {"ckpt-5.index", "ckpt-6.index", "checkpoint"} <= set(left)  # the real ones stay
    assert checkpoints.remove_leftovers(ckpt_dir, keep=1) == []  # nothing more the second time
