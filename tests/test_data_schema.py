"""Record round trip, tokenizers and narration windows (exact values)."""

import numpy as np
import pytest
import tensorflow as tf
from tiny_data import grey_jpeg

from vatt_gh.data import augment, schema
from vatt_gh.data import text as text_lib
from vatt_gh.data.clips import select_captions


def test_round_trip_every_field():
    frames = [grey_jpeg(10), grey_jpeg(200)]
    audio = np.arange(11, dtype=np.float32) / 7.0  # 11 samples in chunks of 4: 4 + 4 + 3
    example = schema.make_sequence_example(
        "vid_1.50",
        frames,
        audio,
        ["first one", "second"],
        [3, 7],
        audio_chunk=4,
        extra_int_context={schema.ALIGNED_VA: [0], schema.ALIGNED_VT: [1]},
    )
    assert len(example.feature_lists.feature_list[schema.WAVEFORM].feature) == 3
    parsed = schema.parse_sequence_example(tf.constant(example.SerializeToString()))
    assert parsed["clip_id"].numpy() == b"vid_1.50"
    assert parsed["captions"].numpy().tolist() == [b"first one", b"second"]
    assert parsed["labels"].numpy().tolist() == [3, 7]
    assert parsed["frames"].numpy().tolist() == frames
    np.testing.assert_array_equal(parsed["audio"].numpy(), audio)
    assert int(parsed["aligned_va"]) == 0 and int(parsed["aligned_vt"]) == 1


def test_missing_optional_fields_are_empty_and_aligned_defaults_to_one():
    example = schema.make_sequence_example("v", [grey_jpeg(0)])
    parsed = schema.parse_sequence_example(tf.constant(example.SerializeToString()))
    assert parsed["captions"].shape == (0,) and parsed["labels"].shape == (0,)
    assert parsed["audio"].shape == (0,) and parsed["frames"].shape == (1,)
    assert int(parsed["aligned_va"]) == 1 and int(parsed["aligned_vt"]) == 1


def test_writer_refuses_a_clip_without_video():
    with pytest.raises(ValueError, match="at least one video frame"):
        schema.make_sequence_example("v", [])


def test_word_tokenizer_exact_ids(tmp_path):
    path = str(tmp_path / "vocab.txt")
    text_lib.write_word_vocab(path, ["cut", "the", "onion", ",", "."])
    # ids: <pad>=0 <unk>=1 cut=2 the=3 onion=4 ,=5 .=6
    tok = text_lib.Tokenizer(path, "word", max_tokens=5)
    ids = tok(tf.constant(["Cut the ONION, slowly.", "", "the the the the the the the"]))
    assert ids.dtype == tf.int32
    np.testing.assert_array_equal(ids.numpy(), [[2, 3, 4, 5, 1], [0, 0, 0, 0, 0], [3] * 5])


def test_wordpiece_tokenizer_exact_ids(tmp_path):
    path = tmp_path / "wp.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "cut", "on", "##ion", "the", "."]) + "\n")
    tok = text_lib.Tokenizer(str(path), "wordpiece", max_tokens=6)
    ids = tok(tf.constant(["Cut the Onion.", "zebra"]))
    np.testing.assert_array_equal(ids.numpy(), [[2, 5, 3, 4, 6, 0], [1, 0, 0, 0, 0, 0]])


def test_vocab_without_pad_first_is_rejected(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("hello\n<pad>\n<unk>\n")
    with pytest.raises(ValueError, match="line 0 must be the pad token"):
        text_lib.Tokenizer(str(path))


def test_select_captions_central_random_and_padding():
    caps = tf.constant([b"c0", b"c1", b"c2", b"c3", b"c4", b"c5"])
    chosen, mask = select_captions(caps, 3, None)  # central: start (6 - 3) // 2 = 1
    assert chosen.numpy().tolist() == [b"c1", b"c2", b"c3"] and mask.numpy().tolist() == [1, 1, 1]
    starts = set()
    for i in range(40):
        chosen, _ = select_captions(caps, 3, tf.constant([i, 5], tf.int64))
        first = int(chosen.numpy()[0][1:])
        assert chosen.numpy().tolist() == [b"c%d" % (first + j) for j in range(3)]
        starts.add(first)
    assert starts == {0, 1, 2, 3}  # every start in [0, 6 - 3]
    chosen, mask = select_captions(caps[:2], 4, tf.constant([1, 2], tf.int64))
    assert chosen.numpy().tolist() == [b"c0", b"c1", b"", b""]
    assert mask.numpy().tolist() == [1, 1, 0, 0]
    _, mask = select_captions(tf.zeros([0], tf.string), 2, None)
    assert mask.numpy().tolist() == [0, 0]


def test_window_offsets_and_indices():
    np.testing.assert_array_equal(augment.window_offsets(20, 8, 3).numpy(), [0, 6, 12])
    np.testing.assert_array_equal(augment.window_offsets(20, 8, 1).numpy(), [6])
    np.testing.assert_array_equal(augment.window_offsets(5, 8, 2).numpy(), [0, 0])
    idx = augment.frame_indices(tf.constant([0, 3]), 3, 2, 6).numpy()
    np.testing.assert_array_equal(idx, [[0, 2, 4], [3, 5, 5]])  # short video: last frame repeats


def test_crop_box_eval_is_central_and_train_stays_inside():
    box = augment.crop_box(tf.constant([40, 60, 3]), 32, 40).numpy()
    np.testing.assert_array_equal(box, [4, 14, 32, 32])  # side 40 * 32 / 40, centred
    for i in range(20):
        y, x, h, w = augment.crop_box(
            tf.constant([40, 60, 3]), 32, 40, (0.8, 1.2), tf.constant([i, 0], tf.int64)
        ).numpy()
        # VATT's jitter: independent height / width factors, aspect ratio within 0.8 / 1.2
        assert 0.8 / 1.2 - 0.05 <= h / w <= 1.2 / 0.8 + 0.05, (h, w)
        assert 1 <= h <= 40 and 1 <= w <= 60 and 0 <= y <= 40 - h and 0 <= x <= 60 - w
