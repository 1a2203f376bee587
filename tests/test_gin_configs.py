"""Every shipped gin file starts: parsed as its header says, its sources pointed at small records
laid out like the real ones (HowTo100M 10 fps with narrations, AudioSet 25 fps without, YouTube-8M
10 fps 5 s clips with captions and labels), the pipeline built and one training step run with a
tiny model. The model size, batch and crop are the only settings overridden; frame counts, frame
rates, strides and audio windows stay as shipped, so a config whose sources disagree fails here.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import gin
from vatt_gh import configs, pretraining, trainer
from vatt_gh.data import schema, synthetic
from vatt_gh.data import text as text_lib
from vatt_gh.data.configs import PretrainConfig, SourceConfig, source_specs
from vatt_gh.data.pretrain_input import pretrain_dataset
from vatt_gh.models import presets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "gin", "**", "*.gin"), recursive=True)
)
# Records like the sources: (fps, frames per clip = clip seconds * fps, narrations per clip).
SOURCES = {"howto100m": (10.0, 40, 3), "audioset": (25.0, 100, 0), "yt8m": (10.0, 50, 3)}
# Model sizes whose run would be the paper's model: parsed and checked, not stepped.
SIZE_ONLY = {f"gin/model/{size}.gin" for size in ("small", "base", "medium", "large")}


def files_for(gin_file):
    """The gin files a user passes to start `gin_file` (its header comment's command)."""
    if gin_file.startswith(("gin/data/", "gin/model/")) or gin_file == "gin/tpu.gin":
        return ["gin/baseline.gin", gin_file]
    if gin_file == "gin/demo.gin":
        return ["gin/curriculum.gin", gin_file]
    return [gin_file]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """{source: file pattern} plus the vocabulary, written with the repo's synthetic writer."""
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for i, (name, (fps, frames, captions)) in enumerate(SOURCES.items()):
        made = synthetic.write_synthetic(
            str(root / name),
            num_clips=4,
            num_classes=2,
            seed=i,
            num_frames=frames,
            frame_size=20,
            fps=fps,
            num_captions=captions,
            words_per_caption=3,
            num_shards=2,
            prefix=name,
        )
        out[name] = made["file_pattern"]
        out["vocab"] = made["vocab_path"]
    return out


def tiny_bindings(records, tmp_path):
    bindings = [
        "build_vatt.preset = 'tiny'",
        "build_vatt.num_layers = 1",
        "build_vatt.audio_patch_size = 4800",  # 153,600 samples -> 32 audio tokens
        "pretrain.train_steps = 1",
        "pretrain.allow_low_learning_rate = True",  # one step: lr 0 (warm-up's first step)
        "pretrain.global_batch_size = 2",
        "Harmonization.granularity = 'group:1'",  # the configs' group:8 needs 8 clips a device
        "pretrain.progress = False",
        "PretrainConfig.crop_size = 16",
        "PretrainConfig.min_resize = 20",
        "PretrainConfig.shuffle_buffer = 2",
        "PretrainConfig.cycle_length = 2",
        f"PretrainConfig.vocab_path = '{records['vocab']}'",
        "build_vatt.word_vectors_path = None",  # a random frozen table (tests only)
        "SyntheticData.num_clips = 8",
        "SyntheticData.num_shards = 2",
    ]
    bindings += [f"{name}/SourceConfig.file_pattern = '{records[name]}'" for name in SOURCES]
    return bindings


def test_every_gin_file_is_listed():
    assert "gin/data/howto100m_audioset_yt8m.gin" in GIN_FILES
    assert "gin/both_setting3.gin" in GIN_FILES
    assert len(GIN_FILES) >= 18


@pytest.mark.parametrize("gin_file", GIN_FILES)
def test_gin_file_parses_to_a_consistent_config(gin_file, clean_gin):
    """As shipped (no overrides): sources agree on one audio window, method and preset exist."""
    configs.parse_gin(files_for(gin_file))
    config = PretrainConfig()
    specs = source_specs(config)  # raises when the sources' windows differ
    assert {s.audio_samples for s in specs} == {153_600} or gin_file == "gin/demo.gin"
    trainer.Harmonization()
    presets.get_config(gin.query_parameter("build_vatt.preset"))


def test_mixture_configs_as_the_paper_says(clean_gin):
    configs.parse_gin(["gin/both_setting3.gin"])
    config = PretrainConfig()
    got = {s.name: (s.fps, s.stride, s.weight) for s in config.sources}
    assert got == {
        "howto100m": (10.0, 1, 1.0),
        "audioset": (25.0, 2, 1.0),
        "yt8m": (10.0, 1, 1.0),
    }
    assert config.num_frames == 32 and config.audio_seconds == 3.2
    assert trainer.Harmonization().method == "both"
    gin.clear_config()
    configs.parse_gin(
        ["gin/baseline.gin", "gin/data/howto100m_audioset.gin"],
        ["audioset/SourceConfig.weight = 3.0"],
    )
    config = PretrainConfig()
    assert [(s.name, s.weight) for s in config.sources] == [("howto100m", 1.0), ("audioset", 3.0)]


def test_a_longer_audio_window_is_centred_on_the_frames(tmp_path):
    """AudioSet in the mixture: 32 frames at stride 2 / 25 fps span 2.56 s, the audio window is
    3.2 s. Scaled down here: 4 frames at stride 2 (0.32 s) with 0.64 s of audio. Each frame's grey
    level says its index, each audio sample its own position, so the test reads off where the
    frames and the audio were cut and checks that their time spans share a centre."""
    fps, sr, count = 25.0, schema.SAMPLE_RATE, 24
    per_frame = int(sr / fps)
    jpegs = [
        tf.io.encode_jpeg(np.full((20, 20, 3), 10 * i + 10, np.uint8)).numpy() for i in range(count)
    ]
    scale = 10_000.0  # sample n has value n / scale: within the pipeline's amplitude limit (10)
    audio = np.arange(count * per_frame, dtype=np.float32) / scale
    records = []
    for k in range(8):
        records.append(schema.make_sequence_example(f"c{k}", jpegs, audio, audio_chunk=per_frame))
    path = str(tmp_path / "audioset.tfrecord")
    schema.write_records(path, records)
    vocab = str(tmp_path / "vocab.txt")
    text_lib.write_word_vocab(vocab, ["word"])
    config = PretrainConfig(
        sources=(SourceConfig(path, fps=fps, stride=2),),
        num_frames=4,
        crop_size=16,
        min_resize=20,
        flip=False,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        audio_noise=0.0,  # frames and audio carry their time index exactly
        audio_seconds=0.64,
        num_captions=1,
        max_tokens=2,
        vocab_path=vocab,
        shuffle_buffer=1,
        repeat=False,
    )
    samples = int(0.64 * sr)
    centred = 0
    for batch in pretrain_dataset(config, 4):
        for video, clip_audio in zip(batch["video"].numpy(), batch["audio"].numpy()):
            grey = (video[:, 0, 0, 0] + 1) / 2 * 255  # (T,) one level per frame
            frames = np.round((grey - 10) / 10).astype(int)
            k0 = frames[0]
            np.testing.assert_array_equal(frames, k0 + 2 * np.arange(4))
            assert clip_audio.shape == (samples,)
            start = int(round(clip_audio[0] * scale))
            want = max(k0 * per_frame - (samples - 8 * per_frame) // 2, 0)
            assert start == want
            if start > 0:  # not clipped at the record's start: same centre, to the sample
                assert (start + samples / 2) / sr == pytest.approx((k0 + 4) / fps, abs=1 / sr)
                centred += 1
            end = min(start + samples, count * per_frame)
            np.testing.assert_allclose(
                clip_audio[: end - start] * scale, np.arange(start, end), atol=0.05
            )
            assert not clip_audio[end - start :].any()  # past the record's audio: zeros
    assert centred > 0


def _one_step(gin_file, records, tmp_path):
    configs.parse_gin(files_for(gin_file), tiny_bindings(records, tmp_path))
    model_dir = str(tmp_path / "run")
    model = pretraining.pretrain(model_dir)
    assert int(model.optimizer.iterations.numpy()) == 1
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("-1")


@pytest.mark.slow  # about 45 s of CPU (tracing the harmonized step), minutes on a busy machine
def test_setting3_config_runs_one_step(records, tmp_path, clean_gin):
    _one_step("gin/both_setting3.gin", records, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "gin_file", [f for f in GIN_FILES if f not in SIZE_ONLY and f != "gin/both_setting3.gin"]
)
def test_gin_file_runs_one_step(gin_file, records, tmp_path, clean_gin):
    _one_step(gin_file, records, tmp_path)
