"""The pre-training input position: a few numbers per source from which the pipeline rebuilds
itself exactly (resume at any example equals the uninterrupted stream), reading again at most
the open group of shards. Records are tiny (8 x 8 frames); every clip has its own label."""

import os

import numpy as np
import pytest
from tiny_data import grey_jpeg, tiny_pretrain_config, write_shard

from vatt_gh.data import schema
from vatt_gh.data import text as text_lib
from vatt_gh.data.configs import SourceConfig
from vatt_gh.data.pretrain_input import advance_position, pretrain_examples
from vatt_gh.data.read import ShardCounts
from vatt_gh.data.rejects import DataErrors

SR = schema.SAMPLE_RATE
SIZES = (3, 5, 1, 4, 2, 6, 3, 4)  # records per shard: unequal, so shards drop out of a group


def _clip(label, value=100):
    frames = [grey_jpeg(value)] * 6
    return schema.make_sequence_example(
        f"c{label}", frames, np.zeros(6 * 4800, np.float32), ["w0 w1"], [label]
    )


def _write_shards(root, prefix, sizes, first_label=0):
    label = first_label
    for k, n in enumerate(sizes):
        write_shard(
            os.path.join(root, f"{prefix}-{k:02d}.tfrecord"), [_clip(label + i) for i in range(n)]
        )
        label += n
    return os.path.join(root, f"{prefix}-*.tfrecord")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shards"))
    vocab = os.path.join(root, "vocab.txt")
    text_lib.write_word_vocab(vocab, ["w0", "w1"])
    return root, vocab, _write_shards(root, "a", SIZES)


def _config(vocab, *sources, **kw):
    """Shuffled in blocks of 4 over groups of 3 shards, repeated, random flips: the per-record
    seeds must follow the position."""
    settings = dict(shuffle_buffer=4, cycle_length=3, repeat=True, flip=True)
    return tiny_pretrain_config(vocab, *sources, **{**settings, **kw})


def _examples(config, n, position=None, counts=None):
    ds = pretrain_examples(config, DataErrors(config.on_error), 0, 1, position, counts)
    return [(int(x["label"]), x["video"].numpy()) for x in ds.take(n)]


def _same(a, b):
    assert [l for l, _ in a] == [l for l, _ in b]
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def whole(data):
    """The uninterrupted stream: three epochs."""
    _, vocab, pattern = data
    return _examples(_config(vocab, SourceConfig(pattern)), 3 * sum(SIZES))


def test_every_epoch_is_every_record_once(whole):
    total = sum(SIZES)
    labels = [l for l, _ in whole]
    for e in range(3):
        assert sorted(labels[e * total : (e + 1) * total]) == list(range(total))
    assert labels[:total] != labels[total : 2 * total]  # a new shard order and blocks per epoch


@pytest.mark.parametrize("k", [1, 13, 29, 61])  # in blocks, at a block start, epochs 0-2
def test_resume_from_the_position_is_exact(data, whole, k):
    _, vocab, pattern = data
    config = _config(vocab, SourceConfig(pattern))
    position = advance_position(config, None, k)
    assert position.examples == k and position.sources[0].records == k
    _same(_examples(config, 9, position), whole[k : k + 9])


def test_positions_compose(data):
    """Advancing in two hops gives the position of one hop of the same length."""
    _, vocab, pattern = data
    config = _config(vocab, SourceConfig(pattern))
    one = advance_position(config, None, 53)
    two = advance_position(config, advance_position(config, None, 21), 32)
    assert one == two


def test_a_late_restart_reads_only_the_open_group(data):
    _, vocab, pattern = data
    config = _config(vocab, SourceConfig(pattern), cycle_length=2)
    position = advance_position(config, None, 5 * sum(SIZES) + 7)  # epoch 5
    counts = ShardCounts()
    ds = pretrain_examples(config, DataErrors(), 0, 1, position, counts)
    next(iter(ds))
    opened = counts._counts
    assert 1 <= len(opened) <= 2 * config.cycle_length < len(SIZES), sorted(opened)


@pytest.mark.slow  # about a minute on 2 busy cores
def test_mixture_resume_is_exact(data):
    root, vocab, pattern = data
    other = _write_shards(root, "b", (4, 2, 5), first_label=1000)
    config = _config(
        vocab, SourceConfig(pattern, weight=2.0), SourceConfig(other, weight=1.0), seed=3
    )
    whole = _examples(config, 40)
    labels = np.array([l for l, _ in whole])
    assert 0 < (labels >= 1000).sum() < 40
    for k in (7, 26):
        position = advance_position(config, None, k)
        assert sum(s.records for s in position.sources) == k
        assert position.sources[1].records == int((labels[:k] >= 1000).sum())
        _same(_examples(config, 40 - k, position), whole[k:])


def test_skipped_records_keep_positions_exact(data, tmp_path):
    """on_error='skip': a rejected record's place goes to a good record of its block."""
    root, vocab, _ = data
    good = [_clip(100 + i) for i in range(5)]
    write_shard(tmp_path / "s-00.tfrecord", good[:2] + [b"\x0a\xff\xff junk"] + good[2:])
    write_shard(tmp_path / "s-01.tfrecord", [_clip(200 + i) for i in range(3)])
    config = _config(vocab, SourceConfig(str(tmp_path / "s-*.tfrecord")), on_error="skip")
    whole = _examples(config, 30)
    labels = [l for l, _ in whole]
    assert set(labels) == {100, 101, 102, 103, 104, 200, 201, 202}
    assert len(labels) == 30  # every block of 4 records gave 4 examples
    for k in (3, 14):
        _same(_examples(config, 30 - k, advance_position(config, None, k)), whole[k:])
