"""Every bad-input case under on_error='raise' (fails naming shard and record) and 'skip'
(the record is skipped and counted; the good records still come out)."""

import threading

import numpy as np
import pytest
import tensorflow as tf
from tiny_data import grey_jpeg, tiny_pretrain_config, write_shard

from vatt_gh.data import schema
from vatt_gh.data.configs import EvalConfig, PretrainConfig, SourceConfig
from vatt_gh.data.pretrain_input import pretrain_dataset
from vatt_gh.data.rejects import (
    BAD_AUDIO,
    BAD_FLAG,
    CORRUPT_SHARD,
    EMPTY_CAPTION,
    FRAME_TOO_LARGE,
    NO_VIDEO,
    REASON_NAMES,
    SHORT_AUDIO,
    UNDECODABLE,
    DataErrors,
)

SR = schema.SAMPLE_RATE


def _good(i, **kw):
    args = dict(jpegs=[grey_jpeg(100)] * 6, audio=np.zeros(6 * 4800, np.float32), captions=["w0"])
    args.update(kw)
    return schema.make_sequence_example(
        f"c{i}", args["jpegs"], args["audio"], args["captions"], [i]
    ).SerializeToString()


def _bomb(height=9000, width=9000):
    """A small JPEG whose header (SOF0) claims height x width pixels."""
    data = bytearray(grey_jpeg(100))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _record(i, aligned=(1, 1), labels=None, **kw):
    """A good record with its synthetic aligned flags (and labels) set to anything."""
    args = dict(jpegs=[grey_jpeg(100)] * 6, audio=np.zeros(6 * 4800, np.float32), captions=["w0"])
    args.update(kw)
    return schema.make_sequence_example(
        f"c{i}",
        args["jpegs"],
        args["audio"],
        args["captions"],
        [i] if labels is None else labels,
        extra_int_context={schema.ALIGNED_VA: [aligned[0]], schema.ALIGNED_VT: [aligned[1]]},
    ).SerializeToString()


def _audio_with(value):
    audio = np.zeros(6 * 4800, np.float32)
    audio[777] = value
    return audio


def _bad_records():
    """name -> (serialized record, reason). Each bad record sits at index 2 of its shard."""
    no_video = tf.train.SequenceExample()
    no_video.context.feature[schema.CLIP_ID].bytes_list.value.append(b"nv")
    return {
        "undecodable_jpeg": (
            _good(2, jpegs=[grey_jpeg(100)] * 3 + [b"\xff\xd8\xff" + b"junk" * 10] * 3),
            UNDECODABLE,
        ),
        "not_a_proto": (b"\x0a\xff\xff\xff\xff garbage", UNDECODABLE),
        "missing_video": (no_video.SerializeToString(), NO_VIDEO),
        "empty_caption": (_good(2, captions=["w0", "  "]), EMPTY_CAPTION),
        "short_audio": (_good(2, audio=np.zeros(2 * 4800, np.float32)), SHORT_AUDIO),
        # Hostile input: a decompression bomb, NaN audio, NUL-only text, an aligned flag of 7.
        "jpeg_header_bomb": (_good(2, jpegs=[grey_jpeg(100)] * 5 + [_bomb()]), FRAME_TOO_LARGE),
        "nan_audio": (_good(2, audio=_audio_with(np.nan)), BAD_AUDIO),
        "nul_caption": (_good(2, captions=["w0", "\x00\x00"]), EMPTY_CAPTION),
        "aligned_flag_7": (_record(2, aligned=(7, 1)), BAD_FLAG),
    }


def _labels(ds):
    return sorted(int(l) for b in ds for l in b["label"].numpy())


@pytest.mark.parametrize("case", sorted(_bad_records()))
def test_bad_record_raise_and_skip(tmp_path, vocab, case):
    record, reason = _bad_records()[case]
    path = str(tmp_path / f"{case}.tfrecord")
    write_shard(path, [_good(0), _good(1), record, _good(3)])
    with pytest.raises(Exception, match=rf"shard {path} record 2: "):
        _labels(pretrain_dataset(tiny_pretrain_config(vocab, path, on_error="raise"), 1))
    errors = DataErrors("skip")
    assert _labels(
        pretrain_dataset(tiny_pretrain_config(vocab, path, on_error="skip"), 1, errors)
    ) == [0, 1, 3]
    assert errors.total == 1 and errors.counts == {REASON_NAMES[reason]: 1}
    assert errors.examples == [(path, 2, REASON_NAMES[reason])]
    assert "skipped 1 record(s)" in errors.summary()


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_bad_shard_raise_and_skip(tmp_path, vocab, damage):
    good = str(tmp_path / "a-good.tfrecord")
    bad = str(tmp_path / "b-bad.tfrecord")
    for path, ids in ((good, [10, 11]), (bad, [0, 1, 2, 3])):
        write_shard(path, [_good(i) for i in ids])
    data = bytearray(open(bad, "rb").read())
    size = len(data) // 4  # four records of equal size
    if damage == "truncated":
        data = data[: 2 * size + size // 2]  # records 0, 1 intact, record 2 cut
    else:
        data[2 * size + size // 2] ^= 0xFF  # record 2's payload no longer matches its CRC
    open(bad, "wb").write(bytes(data))
    pattern = str(tmp_path / "*.tfrecord")
    with pytest.raises(Exception, match=rf"shard {bad} record 2: corrupt or truncated shard"):
        _labels(pretrain_dataset(tiny_pretrain_config(vocab, pattern, on_error="raise"), 1))
    errors = DataErrors("skip")
    assert _labels(
        pretrain_dataset(tiny_pretrain_config(vocab, pattern, on_error="skip"), 1, errors)
    ) == [0, 1, 10, 11]
    assert errors.counts == {REASON_NAMES[CORRUPT_SHARD]: 1}
    assert errors.examples == [(bad, 2, REASON_NAMES[CORRUPT_SHARD])]


def test_missing_audio_or_text_is_not_an_error(tmp_path, vocab):
    path = str(tmp_path / "ok.tfrecord")
    write_shard(path, [_good(0, audio=None), _good(1, captions=[])])
    errors = DataErrors("raise")
    batch = next(
        iter(pretrain_dataset(tiny_pretrain_config(vocab, path, on_error="raise"), 2, errors))
    )
    masks = dict(
        zip(
            batch["label"].numpy(),
            zip(batch["audio_mask"].numpy(), batch["text_mask"].numpy()[:, 0]),
        )
    )
    assert masks == {0: (0.0, 1.0), 1: (1.0, 0.0)} and errors.total == 0


def test_audio_shortfall_within_tolerance_is_padded(tmp_path, vocab):
    path = str(tmp_path / "pad.tfrecord")
    write_shard(path, [_good(0, audio=np.ones(6 * 4800 - 100, np.float32))])  # 6 frames: 100 short
    cfg = tiny_pretrain_config(vocab, path, num_frames=6, audio_noise=0.0)  # padding stays zero
    audio = next(iter(pretrain_dataset(cfg, 1)))["audio"].numpy()[0]
    assert audio.shape == (28800,) and audio[:28700].min() == 1.0 and not audio[28700:].any()


def test_hostile_values_are_skipped_counted_and_named(tmp_path, vocab, caplog):
    """Non-finite or huge audio, bad flags and labels, header bombs, blank captions: each record
    is rejected for its reason before anything is decoded; the good ones come out intact."""
    bad = {
        1: (_good(1, audio=_audio_with(np.inf)), "bad_audio_values"),
        2: (_good(2, audio=_audio_with(-np.inf)), "bad_audio_values"),
        3: (_good(3, audio=_audio_with(1e20)), "bad_audio_values"),
        4: (_good(4, audio=_audio_with(3e38)), "bad_audio_values"),
        5: (_record(5, aligned=(1, -5)), "bad_flag"),
        6: (_record(6, aligned=(2, 0)), "bad_flag"),
        7: (_record(7, labels=[-3]), "bad_flag"),
        8: (_good(8, jpegs=[_bomb(3000, 800)] * 6), "frame_too_large"),
        9: (_good(9, captions=["\x00"]), "empty_caption"),
        10: (_good(10, captions=["w0", "\u3000\t\x01"]), "empty_caption"),
    }
    good = [0, 11, 12]
    records = [bad[i][0] if i in bad else _record(i, aligned=(i % 2, 0)) for i in range(13)]
    path = write_shard(tmp_path / "hostile.tfrecord", records)
    errors = DataErrors("skip", max_examples=1000)
    batches = list(pretrain_dataset(tiny_pretrain_config(vocab, path, on_error="skip"), 1, errors))
    assert sorted(int(b["label"][0]) for b in batches) == good
    for b in batches:
        assert np.isfinite(b["audio"].numpy()).all() and np.abs(b["audio"].numpy()).max() <= 10
        assert set(b["aligned_va"].numpy()) <= {0.0, 1.0}
    assert sorted((i, name) for _, i, name in errors.examples) == sorted(
        (i, name) for i, (_, name) in bad.items()
    )
    assert errors.totals() == {
        "bad_audio_values": 4,
        "bad_flag": 3,
        "frame_too_large": 1,
        "empty_caption": 2,
    }
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "record 1: non-finite or out-of-range waveform values" in logged
    assert "sample 777 of 28800 is inf" in logged  # the first of each reason, with its detail
    assert "frame 0 claims 3000 x 800 (limit max_frame_pixels=" in logged
    assert "aligned_va=1, aligned_vt=-5" in logged


def test_header_bomb_raises_naming_record_and_size(tmp_path, vocab):
    path = write_shard(tmp_path / "bomb.tfrecord", [_good(0, jpegs=[_bomb()] * 6)])
    errors = DataErrors("raise")
    with pytest.raises(Exception, match=rf"shard {path} record 0: .*claims 9000 x 9000"):
        _labels(pretrain_dataset(tiny_pretrain_config(vocab, path, on_error="raise"), 1, errors))
    assert errors.failure.startswith(f"shard {path} record 0: a JPEG header claims")
    assert "on_error='skip'" in errors.failure and "\n" not in errors.failure


def _iterate_with_timeout(ds, seconds=240):
    """Iterates `ds` in a thread; returns (labels, exception); fails if it hangs."""
    out = {"labels": [], "error": None}

    def consume():
        try:
            for b in ds:
                out["labels"].extend(int(x) for x in b["label"].numpy())
        except Exception as e:
            out["error"] = e

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the pipeline still runs after {seconds} s: it hangs"
    return out["labels"], out["error"]


def test_all_records_bad_under_skip_stops_with_one_line_and_few_warnings(tmp_path, vocab, caplog):
    """Shards with nothing valid, repeating forever: a one-line error after max_bad_in_a_row
    rejected records in a row, and one log line per shard and reason (then 10, 100...)."""
    records = [_good(i, captions=[" "]) for i in range(30)]
    for name in ("a", "b"):
        write_shard(tmp_path / f"{name}.tfrecord", records)
    cfg = tiny_pretrain_config(
        vocab, str(tmp_path / "*.tfrecord"), on_error="skip", repeat=True, max_bad_in_a_row=50
    )
    errors = DataErrors("skip")
    labels, error = _iterate_with_timeout(pretrain_dataset(cfg, 1, errors))
    assert labels == [] and error is not None
    assert errors.failure.startswith("no valid record among the last 50 read from source ")
    assert "skipped 50 record(s): 50 x empty_caption" in errors.failure
    assert "no valid record among the last 50" in str(error) and "\n" not in errors.failure
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert 2 <= len(warnings) <= 6, [r.getMessage() for r in warnings]  # 50 records, 2 shards


def test_all_shards_empty_under_repeat_stops(tmp_path, vocab):
    for name in ("a", "b"):
        write_shard(tmp_path / f"{name}.tfrecord", [])
    cfg = tiny_pretrain_config(vocab, str(tmp_path / "*.tfrecord"), on_error="skip", repeat=True)
    errors = DataErrors("skip")
    labels, error = _iterate_with_timeout(pretrain_dataset(cfg, 1, errors))
    assert labels == [] and error is not None
    assert errors.failure.startswith("none of the 2 shard(s) of source ")


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_frames", 0),
        ("crop_size", -4),
        ("shuffle_buffer", -1),
        ("cycle_length", 0),
        ("brightness", float("nan")),
        ("contrast", 2.0),
        ("audio_tolerance_seconds", -0.1),
        ("max_frame_pixels", 0),
        ("max_audio_amplitude", float("inf")),
        ("max_bad_in_a_row", 0),
        ("num_captions", 1.5),
        ("audio_seconds", 0.0),
        ("scale_jitter", (1.2, 0.8)),
        ("scale_jitter_prob", 1.5),
        ("hue", 0.7),
        ("color_prob", -0.1),
        ("audio_noise", float("nan")),
    ],
)
def test_numeric_data_settings_are_checked(field, value):
    with pytest.raises(ValueError, match=rf"^PretrainConfig.{field} = .*: must be"):
        PretrainConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("fps", 0.0), ("stride", 0), ("weight", -1.0)])
def test_numeric_source_settings_are_checked(field, value):
    with pytest.raises(ValueError, match=rf"^SourceConfig.{field} = "):
        SourceConfig("x", **{field: value})
    with pytest.raises(ValueError, match=r"^EvalConfig.num_windows = 0: must be an integer >= 1"):
        EvalConfig(num_windows=0)
