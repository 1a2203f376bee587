"""NCE and MIL-NCE against an independent NumPy float64 implementation of docs/losses.md."""

import numpy as np
import pytest
import tensorflow as tf

from vatt_gh import losses

TAU = 0.07


def reference_mil_nce(video, text, mask, tau=TAU):
    """Explicit loops over docs/losses.md's formulas. video (B, D), text (B, L, D), mask (B, L)."""
    video = np.asarray(video, np.float64)
    text = np.asarray(text, np.float64)
    v = video / np.linalg.norm(video, axis=-1, keepdims=True)
    y = text / np.linalg.norm(text, axis=-1, keepdims=True)
    batch, num_partners = mask.shape
    has_pair = [mask[b].sum() > 0 for b in range(batch)]
    per_example = np.zeros(batch)
    for b in range(batch):
        if not has_pair[b]:
            continue
        positive = sum(np.exp(v[b] @ y[b, l] / tau) for l in range(num_partners) if mask[b, l])
        denominator = 0.0
        for c in range(batch):
            for l in range(num_partners):
                if mask[c, l]:  # v_b against every valid partner
                    denominator += np.exp(v[b] @ y[c, l] / tau)
                if has_pair[c] and mask[b, l]:  # every valid video against b's partners
                    denominator += np.exp(v[c] @ y[b, l] / tau)
        per_example[b] = -np.log(positive / denominator)
    mean = per_example.sum() / max(sum(has_pair), 1)
    return mean, per_example


def random_embeddings(batch, num_partners, dim, seed):
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(batch, dim)).astype(np.float32)
    text = rng.normal(size=(batch, num_partners, dim)).astype(np.float32)
    return video, text


def test_nce_matches_reference_without_mask():
    video, audio = random_embeddings(6, 1, 8, seed=0)
    mean, per_example = losses.nce(video, audio[:, 0])
    ref_mean, ref_per_example = reference_mil_nce(video, audio, np.ones((6, 1)))
    np.testing.assert_allclose(per_example.numpy(), ref_per_example, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-5)


def test_nce_missing_audio_is_excluded():
    video, audio = random_embeddings(6, 1, 8, seed=1)
    mask = np.array([1, 0, 1, 1, 0, 1], np.float32)
    mean, per_example = losses.nce(video, audio[:, 0], mask)
    ref_mean, ref_per_example = reference_mil_nce(video, audio, mask[:, None])
    np.testing.assert_allclose(per_example.numpy(), ref_per_example, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-5)
    assert per_example.numpy()[1] == 0.0 and per_example.numpy()[4] == 0.0
    # Excluding the missing clips must equal computing on the valid clips only.
    keep = mask > 0
    sub_mean, sub_per_example = losses.nce(video[keep], audio[keep, 0])
    np.testing.assert_allclose(per_example.numpy()[keep], sub_per_example.numpy(), rtol=1e-5)
    np.testing.assert_allclose(mean.numpy(), sub_mean.numpy(), rtol=1e-5)


def test_mil_nce_matches_reference_with_padding_and_missing_text():
    video, text = random_embeddings(5, 4, 8, seed=2)
    mask = np.array(
        [
            [1, 1, 1, 1],
            [1, 0, 0, 0],  # padded narrations
            [0, 0, 0, 0],  # a clip without text
            [1, 1, 0, 1],
            [1, 1, 1, 0],
        ],
        np.float32,
    )
    mean, per_example = losses.mil_nce(video, text, mask)
    ref_mean, ref_per_example = reference_mil_nce(video, text, mask)
    np.testing.assert_allclose(per_example.numpy(), ref_per_example, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-5)
    assert per_example.numpy()[2] == 0.0


def test_masked_narrations_do_not_matter():
    """Changing a masked narration's embedding changes nothing, in value or in gradient."""
    video, text = random_embeddings(4, 3, 8, seed=3)
    mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], np.float32)
    changed = text.copy()
    changed[0, 2] += 5.0
    changed[2] *= -3.0
    a = losses.mil_nce(video, text, mask)[1].numpy()
    b = losses.mil_nce(video, changed, mask)[1].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    text_var = tf.Variable(text)
    with tf.GradientTape() as tape:
        mean, _ = losses.mil_nce(video, text_var, mask)
    grad = tape.gradient(mean, text_var).numpy()
    assert np.all(grad[mask == 0] == 0.0)
    assert np.all(np.isfinite(grad))


def test_all_clips_missing_gives_zero_not_nan():
    video, text = random_embeddings(3, 2, 4, seed=4)
    mean, per_example = losses.mil_nce(video, text, np.zeros((3, 2), np.float32))
    assert mean.numpy() == 0.0
    np.testing.assert_array_equal(per_example.numpy(), np.zeros(3))


def test_scale_invariance_and_temperature():
    """Embeddings are L2-normalised inside; the temperature is applied as 1/tau."""
    video, text = random_embeddings(4, 2, 8, seed=5)
    mask = np.ones((4, 2))
    base = losses.mil_nce(video, text)[1].numpy()
    scaled = losses.mil_nce(3.0 * video, 0.5 * text)[1].numpy()
    np.testing.assert_allclose(base, scaled, rtol=1e-5)
    warm = losses.mil_nce(video, text, temperature=0.5)[1].numpy()
    np.testing.assert_allclose(warm, reference_mil_nce(video, text, mask, tau=0.5)[1], rtol=1e-5)


def test_gradient_matches_finite_differences_of_reference():
    video, text = random_embeddings(3, 2, 4, seed=6)
    mask = np.array([[1, 0], [1, 1], [0, 0]], np.float32)
    video_var = tf.Variable(video)
    with tf.GradientTape() as tape:
        mean, _ = losses.mil_nce(video_var, text, mask)
    grad = tape.gradient(mean, video_var).numpy()
    eps = 1e-5
    numeric = np.zeros_like(grad, dtype=np.float64)
    for index in np.ndindex(*video.shape):
        plus, minus = video.astype(np.float64), video.astype(np.float64)
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (
            reference_mil_nce(plus, text, mask)[0] - reference_mil_nce(minus, text, mask)[0]
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)


def test_global_valid_count():
    assert losses.global_valid_count(np.array([1, 0, 1], np.float32)).numpy() == 2.0
    text_mask = np.array([[1, 0], [0, 0], [0, 1]], np.float32)
    assert losses.global_valid_count(text_mask).numpy() == 2.0


@pytest.mark.parametrize("loss", ["nce", "mil_nce"])
def test_losses_compile_with_xla(loss):
    video, text = random_embeddings(4, 3, 8, seed=7)
    mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], np.float32)
    if loss == "nce":
        fn = lambda v, y, m: losses.nce(v, y[:, 0], m[:, 0])
    else:
        fn = losses.mil_nce
    eager = fn(video, text, mask)
    compiled = tf.function(fn, jit_compile=True)(video, text, mask)
    np.testing.assert_allclose(compiled[0].numpy(), eager[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(compiled[1].numpy(), eager[1].numpy(), rtol=1e-5, atol=1e-6)
