"""VATT's input recipe (docs/data.md): short side 224, scale jitter with probability 0.8,
colour jitter with hue with probability 0.8, audio noise of 0.01 x the clip's peak."""

import numpy as np
import tensorflow as tf

from vatt_gh.data import augment, configs

SEEDS = 1000  # a probability of 0.8 over 1000 seeds: standard error 0.013


def seed(i):
    return tf.constant([i, 7], tf.int64)


def test_the_defaults_are_vatts():
    train, evaluation = configs.PretrainConfig(), configs.EvalConfig()
    assert (train.crop_size, train.min_resize, evaluation.min_resize) == (224, 224, 224)
    assert train.scale_jitter == (0.8, 1.2) and train.scale_jitter_prob == 0.8
    assert (train.brightness, train.saturation, train.contrast) == (32 / 255, 0.4, 0.4)
    assert (train.hue, train.color_prob, train.audio_noise) == (0.2, 0.8, 0.01)


def test_the_crop_spans_the_short_side_at_224():
    """A 256 x 320 frame, min_resize 224, crop 224: without jitter the crop is the whole short
    side (VATT resizes the short side to 224 and crops 224), centred in evaluation."""
    box = augment.crop_box(tf.constant([256, 320, 3]), 224, 224).numpy()
    np.testing.assert_array_equal(box, [0, 32, 256, 256])


def test_scale_jitter_happens_with_probability_0_8_and_changes_the_aspect_ratio():
    jittered, ratios = 0, []
    for i in range(SEEDS):
        y, x, h, w = augment.crop_box(
            tf.constant([256, 320, 3]), 224, 224, (0.8, 1.2), seed(i), 0.8
        ).numpy()
        assert 0 <= y <= 256 - h and 0 <= x <= 320 - w
        if (h, w) != (256, 256):
            jittered += 1
            ratios.append(h / w)
    assert abs(jittered / SEEDS - 0.8) < 0.05, jittered
    # box aspect h / w = s_w / s_h with s ~ U(0.8, 1.2): spans (2/3, 3/2)
    assert min(ratios) < 0.75 and max(ratios) > 1.33
    assert min(ratios) >= 0.8 / 1.2 - 0.01 and max(ratios) <= 1.2 / 0.8 + 0.01


def test_colour_jitter_happens_with_probability_0_8_and_moves_the_hue():
    video = tf.tile(tf.constant([[[[0.8, 0.3, 0.2]]]]), [2, 4, 4, 1])  # (T, H, W, 3) orange
    hue = lambda v: tf.image.rgb_to_hsv(v)[..., 0].numpy()
    changed, hue_shifts = 0, []
    for i in range(SEEDS // 4):
        out = augment.flip_and_color(video, seed(i), False, 0.0, 0.0, 0.0, 0.2, 0.8)
        if not np.allclose(out.numpy(), video.numpy()):
            changed += 1
            shift = (hue(out) - hue(video) + 0.5) % 1.0 - 0.5  # on the colour circle
            assert np.ptp(shift) < 1e-5  # the same for every pixel and frame
            hue_shifts.append(shift.flat[0])
    assert abs(changed / (SEEDS // 4) - 0.8) < 0.08, changed
    assert max(np.abs(hue_shifts)) <= 0.2 + 1e-4 and max(np.abs(hue_shifts)) > 0.15


def test_colour_jitter_matches_vatts_ops_in_vatts_order():
    """With colour_prob 1, the clip equals tf.image's brightness, saturation, contrast, hue
    applied in VATT's order with the factors drawn from the same seeds."""
    rng = np.random.default_rng(0)
    video = tf.constant(rng.uniform(0.1, 0.9, (2, 4, 4, 3)), tf.float32)
    s = seed(3)
    got = augment.flip_and_color(video, s, False, 0.1, 0.4, 0.4, 0.2, 1.0).numpy()
    seeds = tf.unstack(tf.random.experimental.stateless_split(s, 6))
    u = lambda k, low, high: tf.random.stateless_uniform([], seeds[k], low, high)
    want = tf.image.adjust_brightness(video, u(1, -0.1, 0.1))
    want = tf.image.adjust_saturation(want, u(2, 0.6, 1.4))
    want = tf.image.adjust_contrast(want, u(3, 0.6, 1.4))
    want = tf.clip_by_value(tf.image.adjust_hue(want, u(4, -0.2, 0.2)), 0.0, 1.0)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)


def test_audio_noise_has_std_0_01_of_the_peak_and_spares_silence():
    t = np.arange(48_000) / 48_000.0
    audio = tf.constant(0.5 * np.sin(2 * np.pi * 440 * t), tf.float32)  # peak 0.5
    noisy = augment.add_audio_noise(audio, seed(1), 0.01)
    residual = (noisy - audio).numpy()
    assert abs(residual.std() / 0.005 - 1) < 0.03  # 48,000 samples: std error 0.3%
    assert abs(residual.mean()) < 1e-4
    silent = augment.add_audio_noise(tf.zeros([100]), seed(1), 0.01)
    np.testing.assert_array_equal(silent.numpy(), np.zeros(100))
    np.testing.assert_array_equal(augment.add_audio_noise(audio, seed(1), 0.0), audio)
