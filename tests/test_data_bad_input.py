"""Every bad-input case under on_error='raise' (fails naming shard and record) and 'skip'
(the record is skipped and counted; the good records still come out)."""

import numpy as np
import pytest
import tensorflow as tf

from vatt_gh.data import pipeline as P
from vatt_gh.data import schema
from vatt_gh.data import text as text_lib

SR = schema.SAMPLE_RATE


def _jpeg(value=100):
    return tf.io.encode_jpeg(np.full((8, 8, 3), value, np.uint8)).numpy()


def _good(i, **kw):
    args = dict(jpegs=[_jpeg()] * 6, audio=np.zeros(6 * 4800, np.float32), captions=["w0"])
    args.update(kw)
    return schema.make_sequence_example(
        f"c{i}", args["jpegs"], args["audio"], args["captions"], [i]
    ).SerializeToString()


def _bad_records():
    """name -> (serialized record, reason). Each bad record sits at index 2 of its shard."""
    no_video = tf.train.SequenceExample()
    no_video.context.feature[schema.CLIP_ID].bytes_list.value.append(b"nv")
    return {
        "undecodable_jpeg": (
            _good(2, jpegs=[_jpeg()] * 3 + [b"\xff\xd8\xff" + b"junk" * 10] * 3),
            P.UNDECODABLE,
        ),
        "not_a_proto": (b"\x0a\xff\xff\xff\xff garbage", P.UNDECODABLE),
        "missing_video": (no_video.SerializeToString(), P.NO_VIDEO),
        "empty_caption": (_good(2, captions=["w0", "  "]), P.EMPTY_CAPTION),
        "short_audio": (_good(2, audio=np.zeros(2 * 4800, np.float32)), P.SHORT_AUDIO),
    }


def _config(pattern, vocab, on_error):
    return P.PretrainConfig(
        sources=(P.SourceConfig(pattern),),
        num_frames=4,
        crop_size=8,
        min_resize=8,
        num_captions=1,
        max_tokens=2,
        vocab_path=vocab,
        shuffle_buffer=1,
        cycle_length=1,
        repeat=False,
        on_error=on_error,
    )


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("v") / "vocab.txt")
    text_lib.write_word_vocab(path, ["w0"])
    return path


def _labels(ds):
    return sorted(int(l) for b in ds for l in b["label"].numpy())


@pytest.mark.parametrize("case", sorted(_bad_records()))
def test_bad_record_raise_and_skip(tmp_path, vocab, case):
    record, reason = _bad_records()[case]
    path = str(tmp_path / f"{case}.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for r in [_good(0), _good(1), record, _good(3)]:
            w.write(r)
    with pytest.raises(Exception, match=rf"shard {path} record 2: "):
        _labels(P.pretrain_dataset(_config(path, vocab, "raise"), 1))
    errors = P.DataErrors("skip")
    assert _labels(P.pretrain_dataset(_config(path, vocab, "skip"), 1, errors)) == [0, 1, 3]
    assert errors.total == 1 and errors.counts == {P.REASONS[reason]: 1}
    assert errors.examples == [(path, 2, P.REASONS[reason])]
    assert "skipped 1 record(s)" in errors.summary()


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_bad_shard_raise_and_skip(tmp_path, vocab, damage):
    good = str(tmp_path / "a-good.tfrecord")
    bad = str(tmp_path / "b-bad.tfrecord")
    for path, ids in ((good, [10, 11]), (bad, [0, 1, 2, 3])):
        with tf.io.TFRecordWriter(path) as w:
            for i in ids:
                w.write(_good(i))
    data = bytearray(open(bad, "rb").read())
    size = len(data) // 4  # four records of equal size
    if damage == "truncated":
        data = data[: 2 * size + size // 2]  # records 0, 1 intact, record 2 cut
    else:
        data[2 * size + size // 2] ^= 0xFF  # record 2's payload no longer matches its CRC
    open(bad, "wb").write(bytes(data))
    pattern = str(tmp_path / "*.tfrecord")
    with pytest.raises(Exception, match=rf"shard {bad} record 2: corrupt or truncated shard"):
        _labels(P.pretrain_dataset(_config(pattern, vocab, "raise"), 1))
    errors = P.DataErrors("skip")
    assert _labels(P.pretrain_dataset(_config(pattern, vocab, "skip"), 1, errors)) == [0, 1, 10, 11]
    assert errors.counts == {P.REASONS[P.CORRUPT_SHARD]: 1}
    assert errors.examples == [(bad, 2, P.REASONS[P.CORRUPT_SHARD])]


def test_missing_audio_or_text_is_not_an_error(tmp_path, vocab):
    path = str(tmp_path / "ok.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(_good(0, audio=None))
        w.write(_good(1, captions=[]))
    errors = P.DataErrors("raise")
    batch = next(iter(P.pretrain_dataset(_config(path, vocab, "raise"), 2, errors)))
    masks = dict(
        zip(
            batch["label"].numpy(),
            zip(batch["audio_mask"].numpy(), batch["text_mask"].numpy()[:, 0]),
        )
    )
    assert masks == {0: (0.0, 1.0), 1: (1.0, 0.0)} and errors.total == 0


def test_audio_shortfall_within_tolerance_is_padded(tmp_path, vocab):
    path = str(tmp_path / "pad.tfrecord")
    with tf.io.TFRecordWriter(path) as w:  # 6 frames = 28800 samples; 100 missing
        w.write(_good(0, audio=np.ones(6 * 4800 - 100, np.float32)))
    cfg = P.PretrainConfig(
        sources=(P.SourceConfig(path),),
        num_frames=6,
        crop_size=8,
        min_resize=8,
        num_captions=1,
        max_tokens=2,
        vocab_path=vocab,
        shuffle_buffer=1,
        repeat=False,
    )
    audio = next(iter(P.pretrain_dataset(cfg, 1)))["audio"].numpy()[0]
    assert audio.shape == (28800,) and audio[:28700].min() == 1.0 and not audio[28700:].any()
