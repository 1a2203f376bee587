"""Seeded fuzzing of the pre-training pipeline: a few hundred mutated records (random payloads,
truncations, flipped bytes, wrong feature types, JPEG header bombs, non-finite audio, blank
captions, bad flags) mixed with good ones. Under on_error='skip' nothing crashes or hangs, every
record either comes out (intact) or is counted with its shard and index, and no bad value reaches
a batch; under 'raise' the first rejected record is named."""

import threading

import numpy as np
import pytest
import tensorflow as tf
from tiny_data import tiny_pretrain_config, write_shard

from vatt_gh.data import schema
from vatt_gh.data import text as text_lib
from vatt_gh.data.configs import MAX_AUDIO_AMPLITUDE
from vatt_gh.data.pretrain_input import pretrain_dataset
from vatt_gh.data.rejects import DataErrors

NUM_SHARDS, PER_SHARD = 4, 75
VOCAB = ["w0", "w1", "w2"]
# Mutations whose record must be rejected, with the reason it must be rejected for (None: any).
MUST_FAIL = {
    "random_payload": None,
    "empty": "no_video",
    "header_bomb": "frame_too_large",
    "nonfinite_audio": "bad_audio_values",
    "huge_audio": "bad_audio_values",
    "blank_caption": "empty_caption",
    "bad_flag": "bad_flag",
    "image_as_floats": "undecodable",
    "caption_as_ints": "undecodable",
    "flag_as_floats": "undecodable",
    "not_a_jpeg": "not_jpeg",
}
MAY_PASS = ("truncated", "flipped_bytes")  # may still be a valid record (then it must be intact)
KINDS = ["good"] * 6 + sorted(MUST_FAIL) + list(MAY_PASS)


def _jpeg(rng):
    return tf.io.encode_jpeg(rng.integers(0, 255, (8, 8, 3), np.uint8)).numpy()


def _bomb(rng):
    data = bytearray(_jpeg(rng))
    i = data.index(b"\xff\xc0")  # SOF0: length, precision, height, width
    side = int(rng.integers(3000, 65535))
    data[i + 5 : i + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


def _example(label, rng, frames=None, audio=None, captions=None, aligned=None):
    seq = schema.make_sequence_example(
        f"clip{label}",
        frames or [_jpeg(rng) for _ in range(6)],
        np.asarray(rng.uniform(-1, 1, 6 * 4800), np.float32) if audio is None else audio,
        captions or [" ".join(rng.choice(VOCAB, 3))],
        [label],
        extra_int_context={
            schema.ALIGNED_VA: [aligned[0] if aligned else int(rng.integers(2))],
            schema.ALIGNED_VT: [aligned[1] if aligned else int(rng.integers(2))],
        },
    )
    return seq


def _mutated(kind, label, rng):  # noqa: C901  (one branch per mutation kind)
    """The serialized record of one kind."""
    if kind == "random_payload":
        return rng.bytes(int(rng.integers(1, 400)))
    if kind == "empty":
        return b""
    if kind == "header_bomb":
        frames = [_jpeg(rng) for _ in range(6)]
        frames[int(rng.integers(6))] = _bomb(rng)
        return _example(label, rng, frames=frames).SerializeToString()
    if kind in ("nonfinite_audio", "huge_audio"):
        audio = np.asarray(rng.uniform(-1, 1, 6 * 4800), np.float32)
        values = [np.nan, np.inf, -np.inf] if kind == "nonfinite_audio" else [1e20, -3e38, 11.0]
        audio[int(rng.integers(audio.size))] = rng.choice(values)
        return _example(label, rng, audio=audio).SerializeToString()
    if kind == "blank_caption":
        blank = str(rng.choice(["", " ", "\x00", "\x00\x00\x00", "\t\n", "\u3000", "\x01"]))
        return _example(label, rng, captions=["w0", blank]).SerializeToString()
    if kind == "bad_flag":
        flag = int(rng.choice([-5, -1, 2, 7, 2**40]))
        aligned = (flag, 1) if rng.integers(2) else (0, flag)
        return _example(label, rng, aligned=aligned).SerializeToString()
    seq = _example(label, rng)
    ctx = seq.context.feature
    if kind == "image_as_floats":
        images = seq.feature_lists.feature_list[schema.IMAGE].feature
        images[int(rng.integers(len(images)))].CopyFrom(
            tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0]))
        )
    elif kind == "caption_as_ints":
        ctx[schema.CAPTION].CopyFrom(tf.train.Feature(int64_list=tf.train.Int64List(value=[3])))
    elif kind == "flag_as_floats":
        ctx[schema.ALIGNED_VA].CopyFrom(
            tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
        )
    elif kind == "not_a_jpeg":
        images = seq.feature_lists.feature_list[schema.IMAGE].feature
        images[0].bytes_list.value[0] = rng.bytes(int(rng.integers(0, 64)))
    data = seq.SerializeToString()
    if kind == "truncated":
        return data[: int(rng.integers(1, len(data)))]
    if kind == "flipped_bytes":
        data = bytearray(data)
        for i in rng.integers(0, len(data), 4):
            data[i] ^= int(rng.integers(1, 256))
        return bytes(data)
    return data


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """(vocab path, shard paths, {(shard, index): (kind, label)})."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(20260)
    vocab = str(root / "vocab.txt")
    text_lib.write_word_vocab(vocab, VOCAB)
    truth, paths = {}, []
    for s in range(NUM_SHARDS):
        path = str(root / f"fuzz-{s}.tfrecord")
        records = []
        for i in range(PER_SHARD):
            label = 1000 * (s + 1) + i
            kind = KINDS[int(rng.integers(len(KINDS)))]
            records.append(_mutated(kind, label, rng))
            truth[(path, i)] = (kind, label)
        paths.append(write_shard(path, records))
    return vocab, paths, truth


def _config(vocab, pattern, on_error):
    """Two captions of three tokens; every shard read at once."""
    return tiny_pretrain_config(
        vocab, pattern, num_captions=2, max_tokens=3, cycle_length=NUM_SHARDS, on_error=on_error
    )


def _consume(ds, seconds=300):
    """Every batch of `ds`, iterated in a thread: a hang fails the test instead of blocking."""
    out = {"batches": [], "error": None}

    def run():
        try:
            out["batches"].extend({k: v.numpy() for k, v in b.items()} for b in ds)
        except Exception as e:
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the pipeline still runs after {seconds} s: it hangs"
    return out["batches"], out["error"]


def test_fuzzed_records_are_counted_or_intact(fuzzed):
    vocab, paths, truth = fuzzed
    kinds = {kind for kind, _ in truth.values()}
    assert kinds == set(KINDS), "every mutation is exercised"
    errors = DataErrors("skip", max_examples=10**6)
    pattern = ",".join(paths)
    batches, error = _consume(pretrain_dataset(_config(vocab, pattern, "skip"), 1, errors))
    assert error is None, error
    emitted = [int(b["label"][0]) for b in batches]
    rejected = {(shard, i): name for shard, i, name in errors.examples}

    # Every record either came out or was counted, never both, never twice.
    assert len(emitted) + errors.total == len(truth) == len(set(emitted)) + len(rejected)
    by_label = {label: key for key, (_, label) in truth.items()}
    for key, (kind, label) in truth.items():
        if kind == "good":
            assert label in emitted and key not in rejected, (key, kind)
        elif kind in MUST_FAIL:
            assert key in rejected and label not in emitted, (key, kind)
            assert MUST_FAIL[kind] in (None, rejected[key]), (key, kind, rejected[key])
        else:
            assert (key in rejected) != (label in emitted), (key, kind)
    assert all(label in by_label for label in emitted)  # nothing invented
    assert sum(errors.totals().values()) == errors.total

    # No bad value reaches a batch.
    for b in batches:
        assert np.isfinite(b["video"]).all() and np.abs(b["video"]).max() <= 1.0
        assert np.isfinite(b["audio"]).all()
        assert np.abs(b["audio"]).max() <= MAX_AUDIO_AMPLITUDE
        assert b["text"].min() >= 0 and b["text"].max() < len(VOCAB) + 2
        for key in ("audio_mask", "text_mask", "aligned_va", "aligned_vt"):
            assert set(np.unique(b[key])) <= {0.0, 1.0}, key


def test_fuzzed_shard_under_raise_names_the_first_rejected_record(fuzzed):
    vocab, paths, truth = fuzzed
    errors = DataErrors("raise")
    batches, error = _consume(pretrain_dataset(_config(vocab, paths[0], "raise"), 1, errors))
    assert error is not None
    first = min(
        i for (shard, i), (kind, _) in truth.items() if shard == paths[0] and kind in MUST_FAIL
    )
    assert errors.failure.startswith(f"shard {paths[0]} record ")
    index = int(errors.failure.split(" record ")[1].split(":")[0])
    assert index <= first and truth[(paths[0], index)][0] != "good"
    assert len(batches) == len(
        [i for (s, i), (k, _) in truth.items() if s == paths[0] and i < index]
    )
