"""Pre-training / evaluation pipelines: time alignment, narrations, masks, mixtures, sharding,
determinism. Records are tiny (8 x 8 frames) and written here with the schema writer."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tiny_data import grey_jpeg, tiny_pretrain_config, write_shard

from vatt_gh.data import schema
from vatt_gh.data.configs import EvalConfig, PretrainConfig, SourceConfig, audio_samples_for
from vatt_gh.data.eval_input import eval_dataset
from vatt_gh.data.pretrain_input import make_pretrain_input_fn, pretrain_dataset

SR = schema.SAMPLE_RATE


def _clip(clip_id, num_frames, fps, label, captions=(), audio=True):
    """Frame i is gray level 20 + 10 i; the audio is a ramp: sample j holds j / 48000 (its time)."""
    frames = [grey_jpeg(20 + 10 * i, quality=100) for i in range(num_frames)]
    wave = np.arange(int(num_frames / fps * SR), dtype=np.float64) / SR if audio else None
    return schema.make_sequence_example(
        clip_id, frames, wave, list(captions), [label], audio_chunk=int(SR / fps)
    )


def _config(pattern, vocab, **kw):
    """Tiny clips whose frames and audio carry their time index exactly (no jitter, flip or
    noise), three captions of four tokens, two shards interleaved, shuffled, repeated."""
    source = SourceConfig(pattern, fps=kw.pop("fps", 10.0), stride=kw.pop("stride", 1))
    plain = dict(
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        audio_noise=0.0,
        flip=False,
        num_captions=3,
        max_tokens=4,
        shuffle_buffer=8,
        cycle_length=2,
        repeat=True,
    )
    return tiny_pretrain_config(vocab, source, **{**plain, **kw})


def _frame_index(video):
    """(T, H, W, 3) in [-1, 1] -> stored-frame index per frame, from the gray level."""
    gray = (video.mean(axis=(1, 2, 3)) + 1.0) / 2.0 * 255.0
    return np.round((gray - 20.0) / 10.0).astype(int)


@pytest.mark.parametrize("fps,stride", [(10.0, 1), (25.0, 2)])
def test_audio_window_matches_frames_time_span(tmp_path, vocab, fps, stride):
    path = write_shard(tmp_path / "a.tfrecord", [_clip(f"c{i}", 20, fps, i) for i in range(4)])
    cfg = _config(path, vocab, fps=fps, stride=stride)
    batch = next(iter(pretrain_dataset(cfg, 4)))
    samples = audio_samples_for(4, stride, fps, SR)
    assert batch["audio"].shape == (4, samples) == (4, int(4 * stride / fps * SR))
    video, audio = batch["video"].numpy(), batch["audio"].numpy()
    offsets = set()
    for b in range(4):
        idx = _frame_index(video[b])
        np.testing.assert_array_equal(np.diff(idx), [stride] * 3)
        assert 0 <= idx[0] <= 20 - 4 * stride
        offsets.add(idx[0])
        # The ramp's value is time: the window starts at frame idx[0]'s time and lasts T*stride/fps.
        np.testing.assert_allclose(audio[b, 0], idx[0] / fps, atol=1e-6)
        np.testing.assert_allclose(audio[b, -1], (idx[0] + 4 * stride) / fps - 1 / SR, atol=1e-6)
    assert len(offsets) > 1  # random offsets, not always the same window


def test_output_contract_text_windows_and_masks(tmp_path, vocab):
    examples = [
        _clip("five", 6, 10.0, 1, captions=[f"w{i} W{i}" for i in range(5)]),  # K = 3 of 5
        _clip("two", 6, 10.0, 2, captions=["w7", "w8 w9 w1 w2 w3"]),  # padded, truncated
        _clip("none", 6, 10.0, 3, captions=[], audio=False),  # no text, no audio
    ]
    path = write_shard(tmp_path / "t.tfrecord", examples)
    cfg = _config(path, vocab, repeat=False)
    batch = next(iter(pretrain_dataset(cfg, 3)))
    expected = {
        "video": ((3, 4, 8, 8, 3), tf.float32),
        "audio": ((3, 4 * 4800), tf.float32),
        "text": ((3, 3, 4), tf.int32),
        "audio_mask": ((3,), tf.float32),
        "text_mask": ((3, 3), tf.float32),
        "label": ((3,), tf.int32),
        "aligned_va": ((3,), tf.float32),
        "aligned_vt": ((3,), tf.float32),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == expected
    rows = {int(l): b for b, l in enumerate(batch["label"].numpy())}
    text, mask = batch["text"].numpy(), batch["text_mask"].numpy()
    first = text[rows[1], 0, 0] - 2
    np.testing.assert_array_equal(
        text[rows[1]], [[i + 2, i + 2, 0, 0] for i in range(first, first + 3)]
    )
    np.testing.assert_array_equal(mask[rows[1]], [1, 1, 1])
    np.testing.assert_array_equal(text[rows[2]], [[9, 0, 0, 0], [10, 11, 3, 4], [0, 0, 0, 0]])
    np.testing.assert_array_equal(mask[rows[2]], [1, 1, 0])
    np.testing.assert_array_equal(text[rows[3]], np.zeros((3, 4)))
    np.testing.assert_array_equal(mask[rows[3]], [0, 0, 0])
    np.testing.assert_array_equal(
        batch["audio_mask"].numpy()[[rows[1], rows[2], rows[3]]], [1, 1, 0]
    )
    assert not batch["audio"].numpy()[rows[3]].any()
    np.testing.assert_array_equal(batch["aligned_va"].numpy(), [1, 1, 1])
    assert batch["video"].numpy().min() >= -1.0 and batch["video"].numpy().max() <= 1.0


def test_same_seed_same_batches_other_seed_differs(tmp_path, vocab):
    files = [
        write_shard(
            tmp_path / f"s{k}.tfrecord",
            [
                _clip(f"c{k}_{i}", 12, 10.0, 10 * k + i, [f"w{j}" for j in range(6)])
                for i in range(6)
            ],
        )
        for k in range(2)
    ]
    pattern = os.path.join(tmp_path, "s*.tfrecord")
    del files

    def take(seed):
        cfg = _config(
            pattern,
            vocab,
            seed=seed,
            brightness=0.1,
            contrast=0.3,
            saturation=0.3,
            flip=True,
            scale_jitter=(0.8, 1.2),
        )
        return [{k: v.numpy() for k, v in b.items()} for b in pretrain_dataset(cfg, 4).take(4)]

    a, b, c = take(1), take(1), take(2)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(
        not np.array_equal(x["label"], z["label"]) or not np.array_equal(x["video"], z["video"])
        for x, z in zip(a, c)
    )


def test_mixture_proportions_and_per_source_fps(tmp_path, vocab):
    a = write_shard(tmp_path / "a.tfrecord", [_clip(f"a{i}", 8, 10.0, 0) for i in range(4)])
    b = write_shard(tmp_path / "b.tfrecord", [_clip(f"b{i}", 16, 20.0, 1) for i in range(4)])
    cfg = _config(
        a,
        vocab,
        sources=(
            SourceConfig(a, fps=10.0, stride=1, weight=3.0),
            SourceConfig(b, fps=20.0, stride=2, weight=1.0),
        ),
        num_captions=1,
    )
    labels = np.concatenate([x["label"].numpy() for x in pretrain_dataset(cfg, 50).take(8)])
    assert abs((labels == 1).mean() - 0.25) < 0.07  # 400 draws: sd 0.022
    mismatched = _config(a, vocab, sources=(SourceConfig(a, fps=10.0), SourceConfig(b, fps=20.0)))
    with pytest.raises(ValueError, match="different time windows"):
        pretrain_dataset(mismatched, 2)


def test_input_fn_shards_files_per_pipeline_and_batches_per_replica(tmp_path, vocab):
    for k in range(4):
        write_shard(tmp_path / f"h{k}.tfrecord", [_clip(f"h{k}_{i}", 6, 10.0, k) for i in range(3)])
    cfg = _config(os.path.join(tmp_path, "h*.tfrecord"), vocab, num_captions=1)
    input_fn = make_pretrain_input_fn(cfg, global_batch_size=8)
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=4
        )
        batch = next(iter(input_fn(ctx)))
        assert batch["video"].shape[0] == 2  # 8 / 4 replicas
        seen.append(set(np.concatenate([b["label"].numpy() for b in input_fn(ctx).take(4)])))
    assert seen == [{0, 2}, {1, 3}]  # files[pid::2], sorted names


def test_missing_pattern_is_named(vocab):
    with pytest.raises(FileNotFoundError, match="/nowhere/x-"):
        pretrain_dataset(_config("/nowhere/x-*", vocab), 2)


def test_eval_windows_central_caption_and_clip_ids(tmp_path, vocab):
    examples = [
        _clip(f"e{i}", 20, 10.0, i, captions=["w1", "w2", "w3", "w4", "w5"]) for i in range(3)
    ]
    path = write_shard(tmp_path / "e.tfrecord", examples)
    cfg = EvalConfig(
        file_pattern=path,
        num_frames=4,
        stride=2,
        num_windows=3,
        crop_size=8,
        min_resize=8,
        num_captions=1,
        max_tokens=2,
        vocab_path=vocab,
    )
    batches = list(eval_dataset(cfg, 2))
    assert [b["video"].shape[0] for b in batches] == [2, 1]  # nothing dropped
    b = batches[0]
    assert b["video"].shape == (2, 3, 4, 8, 8, 3) and b["audio"].shape == (2, 3, 4 * 2 * 4800)
    assert b["clip_id"].numpy().tolist() == [b"e0", b"e1"]
    for w, start in enumerate([0, 6, 12]):  # evenly spaced in [0, 20 - 8]
        np.testing.assert_array_equal(
            _frame_index(b["video"].numpy()[0, w]), [start, start + 2, start + 4, start + 6]
        )
        np.testing.assert_allclose(b["audio"].numpy()[0, w, 0], start / 10.0, atol=1e-6)
    np.testing.assert_array_equal(b["text"].numpy()[0], [[5, 0]])  # central narration "w3"
    np.testing.assert_array_equal(b["label"].numpy(), [0, 1])


def _gradient_jpeg(height, width, level):
    """Red: the frame's level (its time); green: 8 x column; blue: 8 x row (lossless enough)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([np.full_like(x, level), 8 * x, 8 * y], axis=-1).astype(np.uint8)
    return tf.io.encode_jpeg(image, quality=100, chroma_downsampling=False).numpy()


@pytest.mark.parametrize("height,width", [(8, 24), (24, 8), (8, 8)])
def test_three_crops_per_window_start_centre_end_of_the_long_side(tmp_path, vocab, height, width):
    """VATT's three-crop testing: views window-major (window w, crop c -> 3 w + c), each the
    frame's box at the start, centre or end of its long side, with its window's audio."""
    frames = [_gradient_jpeg(height, width, 20 + 10 * i) for i in range(20)]
    wave = np.arange(2 * SR, dtype=np.float64) / SR  # 2 s: sample j holds its time
    example = schema.make_sequence_example("c0", frames, wave, ["w1"], [0], audio_chunk=SR // 10)
    path = write_shard(tmp_path / "c.tfrecord", [example])
    cfg = EvalConfig(
        file_pattern=path,
        num_frames=4,
        stride=2,
        num_windows=2,
        num_crops=3,
        crop_size=8,
        min_resize=8,
        max_tokens=2,
        vocab_path=vocab,
    )
    batch = next(iter(eval_dataset(cfg, 1)))
    video, audio = batch["video"].numpy()[0], batch["audio"].numpy()[0]
    assert video.shape == (6, 4, 8, 8, 3) and audio.shape == (6, 4 * 2 * 4800)
    long_side = max(height, width)
    starts = [0, (long_side - 8) // 2, long_side - 8]  # DMVR's multi_crop_image
    for view in range(6):
        window, crop = divmod(view, 3)
        first = [0, 12][window]  # 2 windows evenly spaced over [0, 20 - 8]
        for k in range(4):
            full = tf.io.decode_jpeg(frames[first + 2 * k]).numpy().astype(np.float64)
            if height >= width:
                want = full[starts[crop] : starts[crop] + 8, :8]
            else:
                want = full[:8, starts[crop] : starts[crop] + 8]
            np.testing.assert_allclose(video[view, k], want / 127.5 - 1.0, atol=1e-5)
        np.testing.assert_allclose(audio[view, 0], first / 10.0, atol=1e-6)


def test_crops_other_than_one_or_three_are_refused():
    with pytest.raises(ValueError, match=r"EvalConfig.num_crops = 2: must be 1 .* or 3"):
        EvalConfig(file_pattern="x", num_crops=2)


def test_gin_reaches_every_setting(clean_gin):
    import gin

    gin.parse_config("""
      howto/SourceConfig.file_pattern = 'x-*'
      howto/SourceConfig.fps = 25.0
      howto/SourceConfig.stride = 2
      PretrainConfig.sources = (@howto/SourceConfig(),)
      PretrainConfig.num_frames = 8
      PretrainConfig.on_error = 'skip'
  """)
    cfg = PretrainConfig()
    assert cfg.num_frames == 8 and cfg.on_error == "skip"
    assert cfg.sources == (SourceConfig("x-*", fps=25.0, stride=2),)
