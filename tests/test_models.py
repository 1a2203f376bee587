"""VATT-MA / VATT-MS: shapes, pooling, DropToken, parameter counts, word vectors, positional
interpolation, and one XLA-compiled forward + backward pass with both losses."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import gin
from vatt_gh import losses
from vatt_gh.models import PRESETS, build_vatt, dummy_inputs, get_config
from vatt_gh.models.backbone import TransformerEncoder, num_kept_tokens
from vatt_gh.models.positional import FactorisedPositionalEmbedding

BATCH, K = 2, 3


def random_inputs(
    config, batch=BATCH, k=K, seed=0, grid_scale=(1, 1, 1), audio_scale=1.0, text_length=None
):
    rng = np.random.default_rng(seed)
    t, h, w = (
        int(g * s) * p for g, s, p in zip(config.video_grid, grid_scale, config.video_patch_size)
    )
    samples = int(config.audio_grid * audio_scale) * config.audio_patch_size
    length = config.text_grid if text_length is None else text_length
    text = rng.integers(1, config.vocab_size, size=(batch, k, length))
    text[:, :, length // 2 :] = 0  # padded second half
    return {
        "video": tf.constant(rng.uniform(-1, 1, (batch, t, h, w, 3)), tf.float32),
        "audio": tf.constant(rng.normal(size=(batch, samples)) * 0.1, tf.float32),
        "text": tf.constant(text, tf.int32),
    }


@pytest.fixture(scope="module", params=["agnostic", "specific"])
def tiny_model(request):
    model = build_vatt("tiny", request.param)
    model(random_inputs(model.vatt_config), training=False)
    return model


def encoder_parameters(layers, d, m):
    """Pre-norm Transformer: per layer 4 (d d + d) attention + 2 LayerNorms (4 d) + MLP
    (d m + m + m d + d); plus the final LayerNorm (2 d)."""
    per_layer = 4 * (d * d + d) + 4 * d + (d * m + m) + (m * d + d)
    return layers * per_layer + 2 * d


# --- shapes and pooling ---------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_output_shapes(tiny_model, training):
    config = tiny_model.vatt_config
    out = tiny_model(random_inputs(config), training=training)
    d = config.hidden_size
    expected = {
        "video_va": (BATCH, 512),
        "video_vt": (BATCH, 256),
        "audio_va": (BATCH, 512),
        "text_vt": (BATCH, K, 256),
        "video_features": (BATCH, d),
        "audio_features": (BATCH, d),
        "text_features": (BATCH, K, d),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(np.all(np.isfinite(v.numpy())) for v in out.values())


def test_encode_methods_match_call(tiny_model):
    inputs = random_inputs(tiny_model.vatt_config, k=1)
    out = tiny_model(inputs, training=False)
    video = tiny_model.encode_video(inputs["video"], training=False)
    audio = tiny_model.encode_audio(inputs["audio"], training=False)
    text = tiny_model.encode_text(inputs["text"][:, 0], training=False)
    assert sorted(video) == ["features", "va", "vt"] and sorted(audio) == ["features", "va"]
    assert sorted(text) == ["features", "vt"]
    np.testing.assert_allclose(video["vt"], out["video_vt"], atol=1e-6)
    np.testing.assert_allclose(audio["va"], out["audio_va"], atol=1e-6)
    np.testing.assert_allclose(text["vt"], out["text_vt"][:, 0], atol=1e-6)


def test_pooled_feature_is_the_aggregation_tokens_output(tiny_model):
    """Position 0 of the encoder output (after its final norm) is 'video_features'."""
    inputs = random_inputs(tiny_model.vatt_config)
    tokens = tiny_model.video_tokens(inputs["video"], training=False)  # (B, N, D)
    agg = tiny_model.video_aggregation.token  # (1, 1, D)
    sequence = tf.concat([tf.tile(agg, [BATCH, 1, 1]), tokens], axis=1)  # (B, 1 + N, D)
    encoded = tiny_model.encoders["video"](sequence, training=False)
    # The final norm leaves every position with zero mean and unit variance (gamma=1, beta=0).
    np.testing.assert_allclose(tf.reduce_mean(encoded, -1), 0.0, atol=1e-5)
    out = tiny_model(inputs, training=False)
    np.testing.assert_allclose(encoded[:, 0], out["video_features"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(encoded[:, 1], out["video_features"], atol=1e-3)


def test_text_pads_are_not_attended(tiny_model):
    """Changing the pad embedding (id 0) does not change the pooled text feature."""
    config = tiny_model.vatt_config
    text = random_inputs(config)["text"][:, 0]  # half padded
    before = tiny_model.encode_text(text, training=False)["features"].numpy()
    table = tiny_model.text_tokenizer.word_embedding.embeddings
    saved = table.numpy()
    try:
        table.assign(tf.tensor_scatter_nd_update(saved, [[0]], [np.full(config.word_dim, 3.0)]))
        after = tiny_model.encode_text(text, training=False)["features"].numpy()
        # ...while a real word's embedding does change it.
        table.assign(
            tf.tensor_scatter_nd_add(saved, [[int(text[0, 0])]], [np.full(config.word_dim, 3.0)])
        )
        changed = tiny_model.encode_text(text, training=False)["features"].numpy()
    finally:
        table.assign(saved)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-5)
    assert not np.allclose(before[0], changed[0], atol=1e-3)


def test_variants_share_or_split_the_encoder():
    ma, ms = build_vatt("micro", "agnostic"), build_vatt("micro", "specific")
    config = ma.vatt_config
    for model in (ma, ms):
        model(dummy_inputs(config), training=False)
    assert ma.encoders["video"] is ma.encoders["audio"] is ma.encoders["text"]
    assert len({id(e) for e in ms.encoders.values()}) == 3
    encoder = encoder_parameters(config.num_layers, config.hidden_size, config.mlp_dim)
    assert ma.encoders["video"].count_params() == encoder
    assert ms.count_params() - ma.count_params() == 2 * encoder


# --- DropToken ------------------------------------------------------------------------------


def test_drop_token_keeps_a_random_ordered_subset_per_example():
    model = build_vatt("tiny")
    config = model.vatt_config
    inputs = random_inputs(config, batch=4)
    full = model.video_tokens(inputs["video"], training=False).numpy()  # (B, 64, D)
    kept = model.video_tokens(inputs["video"], training=True).numpy()
    num_tokens = int(np.prod(config.video_grid))
    assert kept.shape[1] == num_kept_tokens(num_tokens, 0.5) == num_tokens // 2
    subsets = []
    for b in range(4):
        # Every kept token is one of the example's own tokens, in the original order.
        index = [int(np.argmin(np.abs(full[b] - row).sum(-1))) for row in kept[b]]
        np.testing.assert_allclose(full[b][index], kept[b], atol=1e-6)
        assert index == sorted(index) and len(set(index)) == len(index)
        subsets.append(tuple(index))
    assert len(set(subsets)) > 1  # chosen per example
    audio = model.audio_tokens(inputs["audio"], training=True)
    assert audio.shape[1] == config.audio_grid // 2
    text_tokens, _ = model.text_tokens(inputs["text"][:, 0])
    assert text_tokens.shape[1] == config.text_grid  # no DropToken on text


def test_drop_token_stream_is_seeded_and_checkpointed(tmp_path):
    a, b = build_vatt("micro", seed=3), build_vatt("micro", seed=3)
    video = random_inputs(a.vatt_config)["video"]
    for model in (a, b):
        model(dummy_inputs(model.vatt_config))
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(
        a.video_tokens(video, training=True), b.video_tokens(video, training=True)
    )
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    first = a.video_tokens(video, training=True).numpy()
    tf.train.Checkpoint(model=a).restore(path)
    np.testing.assert_array_equal(first, a.video_tokens(video, training=True))


# --- parameter counts -----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["base", "medium"])
def test_encoder_parameter_count(preset):
    config = get_config(preset)
    assert encoder_parameters(1, 1024, 4096) - 2 * 1024 == 12_596_224  # one layer, docs/model.md
    encoder = TransformerEncoder(
        config.num_layers, config.hidden_size, config.num_heads, config.mlp_dim
    )
    encoder(tf.zeros([1, 2, config.hidden_size]))
    assert encoder.count_params() == encoder_parameters(
        config.num_layers, config.hidden_size, config.mlp_dim
    )


def test_presets_and_overrides():
    assert [
        (PRESETS[p].num_layers, PRESETS[p].hidden_size, PRESETS[p].num_heads, PRESETS[p].mlp_dim)
        for p in ("small", "base", "medium", "large")
    ] == [(6, 512, 8, 2048), (12, 768, 12, 3072), (12, 1024, 16, 4096), (24, 1024, 16, 4096)]
    config = get_config("medium", num_layers=2, va_dim=128)
    assert (config.num_layers, config.va_dim, config.hidden_size) == (2, 128, 1024)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_layers = 3
    with pytest.raises(ValueError, match="Unknown VATT config fields"):
        get_config("tiny", hiden_size=3)
    with pytest.raises(ValueError, match="variant"):
        build_vatt("tiny", "shared")


def test_build_vatt_is_gin_configurable():
    with gin.unlock_config():
        gin.parse_config(
            [
                "build_vatt.preset = 'micro'",
                "build_vatt.variant = 'specific'",
                "build_vatt.num_layers = 2",
            ]
        )
    try:
        model = build_vatt()
    finally:
        gin.clear_config()
    assert model.variant == "specific" and model.vatt_config.num_layers == 2
    assert model.vatt_config.hidden_size == PRESETS["micro"].hidden_size


# --- word vectors ---------------------------------------------------------------------------


def test_word_vectors_load_frozen(tmp_path):
    config = PRESETS["micro"]
    vectors = np.random.default_rng(0).normal(size=(config.vocab_size, config.word_dim))
    path = tmp_path / "words.npy"
    np.save(path, vectors.astype(np.float32))
    model = build_vatt("micro", word_vectors_path=str(path))
    model(dummy_inputs(model.vatt_config))
    table = model.text_tokenizer.word_embedding.embeddings
    np.testing.assert_allclose(table.numpy(), vectors, rtol=1e-6)
    assert all(v is not table for v in model.trainable_variables)
    assert any(v is table for v in model.non_trainable_variables)


def test_word_vectors_wrong_shape_raises(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((7, 5), np.float32))
    config = PRESETS["micro"]
    with pytest.raises(ValueError) as error:
        build_vatt("micro", word_vectors_path=str(path))
    message = str(error.value)
    assert str(path) in message and "(7, 5)" in message
    assert str((config.vocab_size, config.word_dim)) in message


# --- positional embeddings ------------------------------------------------------------------


def test_positional_embedding_unchanged_at_configured_size_and_interpolated_otherwise():
    layer = FactorisedPositionalEmbedding((4, 3), ("temporal", "height"))
    zeros = tf.zeros([1, 4, 3, 8])
    out = layer(zeros)[0].numpy()  # (4, 3, 8)
    t, h = (w.numpy() for w in layer.tables)
    np.testing.assert_array_equal(out, t[:, None] + h[None, :])
    # 4 -> 7 positions on [0, 1]: positions 0, 2, 4, 6 coincide with the table's 4 points,
    # through which the spline passes.
    wide = layer(tf.zeros([1, 7, 3, 8]))[0].numpy()  # (7, 3, 8)
    np.testing.assert_allclose(
        wide[::2] - h[None, :], np.broadcast_to(t[:, None], (4, 3, 8)), atol=1e-4
    )
    assert not np.allclose(wide[1], wide[0], atol=1e-4)


def test_other_input_sizes_use_the_same_weights(tiny_model):
    config = tiny_model.vatt_config
    weights_before = len(tiny_model.weights)
    inputs = random_inputs(
        config, grid_scale=(1.5, 1.5, 1.25), audio_scale=1.5, text_length=config.text_grid + 4
    )
    out = tiny_model(inputs, training=True)
    assert len(tiny_model.weights) == weights_before
    assert out["video_features"].shape == (BATCH, config.hidden_size)
    assert out["text_vt"].shape == (BATCH, K, 256)
    assert all(np.all(np.isfinite(v.numpy())) for v in out.values())


# --- XLA ------------------------------------------------------------------------------------


def test_forward_backward_with_both_losses_compiles_with_xla():
    model = build_vatt("tiny")
    config = model.vatt_config
    inputs = random_inputs(config)
    model(inputs, training=False)
    variables = model.trainable_variables
    text_mask = tf.constant([[1, 1, 0], [1, 0, 0]], tf.float32)
    audio_mask = tf.constant([1, 1], tf.float32)

    @tf.function(jit_compile=True)
    def step(inputs):
        with tf.GradientTape() as tape:
            out = model(inputs, training=True)
            loss_va, _ = losses.nce(out["video_va"], out["audio_va"], audio_mask)
            loss_vt, _ = losses.mil_nce(out["video_vt"], out["text_vt"], text_mask)
            loss = loss_va + loss_vt
        return loss, tape.gradient(loss, variables)

    loss, grads = step(inputs)
    assert np.isfinite(loss.numpy())
    assert all(g is not None for g in grads)  # every trainable variable is reached
    grads = [tf.convert_to_tensor(g).numpy() for g in grads]  # the embedding's IndexedSlices
    assert all(np.all(np.isfinite(g)) for g in grads)
    encoder = [g for g, v in zip(grads, variables) if "/encoder/" in v.name]
    assert encoder and all(np.abs(g).sum() > 0 for g in encoder)
