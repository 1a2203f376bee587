"""VATT-MA / VATT-MS: shapes, pooling, projections, FAC head layer order, dropout settings,
DropToken, parameter counts against VATT's code, word vectors, positional encoding, and one
XLA-compiled forward + backward pass with both losses."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import gin
from vatt_gh import losses
from vatt_gh.models import PRESETS, build_vatt, dummy_inputs, get_config
from vatt_gh.models.backbone import TransformerEncoder, num_kept_tokens
from vatt_gh.models.positional import FactorisedPositionalEmbedding, PositionalEncoding

BATCH, K = 2, 3
MODALITIES = ("video", "audio", "text")


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


def gelu(x):
    """Exact GELU in NumPy (VATT's projections use Keras' default, approximate=False)."""
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def test_pooled_feature_is_the_aggregation_tokens_output_post_projected(tiny_model):
    """'video_features' = post-projection GELU(W h_0 + b) of position 0 of the encoder output
    (VATT-MA; VATT-MS: h_0 itself)."""
    inputs = random_inputs(tiny_model.vatt_config)
    tokens = tiny_model.video_tokens(inputs["video"], training=False)  # (B, N, D)
    agg = tiny_model.video_aggregation.token  # (D,)
    sequence = tf.concat([tf.tile(agg[None, None], [BATCH, 1, 1]), tokens], axis=1)
    encoded = tiny_model.encoders["video"](sequence, training=False).numpy()  # (B, 1 + N, D)
    # The final norm leaves every position with zero mean and unit variance (gamma=1, beta=0).
    np.testing.assert_allclose(encoded.mean(-1), 0.0, atol=1e-5)
    pooled = encoded[:, 0]
    if tiny_model.variant == "agnostic":
        projection = tiny_model.post_projections["video"].dense
        kernel, bias = projection.kernel.numpy(), projection.bias.numpy()
        pooled = gelu(pooled @ kernel + bias)
        other = gelu(encoded[:, 1] @ kernel + bias)
    else:
        assert not tiny_model.post_projections
        other = encoded[:, 1]
    out = tiny_model(inputs, training=False)
    np.testing.assert_allclose(pooled, out["video_features"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(other, out["video_features"], atol=1e-3)


def test_pre_projections_as_vatt(tiny_model):
    """VATT-MA: Dense(D, GELU) with bias after each patch / word embedding. VATT-MS: none on
    video and audio (the patch convolution is D wide), T5's Dense(D, GELU) without bias on
    text."""
    video, audio, text = (
        tiny_model.video_tokenizer,
        tiny_model.audio_tokenizer,
        tiny_model.text_tokenizer,
    )
    gelu_fn = tf.keras.activations.get("gelu")
    if tiny_model.variant == "agnostic":
        for tokenizer in (video, audio, text):
            assert tokenizer.projection.activation.activation is gelu_fn
            assert tokenizer.projection.dense.use_bias
    else:
        assert video.projection is None and audio.projection is None
        assert text.projection.activation.activation is gelu_fn
        assert not text.projection.dense.use_bias
    # The activation is really applied: the video tokens before positions are GELU outputs.
    clip = random_inputs(tiny_model.vatt_config)["video"]
    patches = video.voxel_to_patch(clip).numpy()
    expected = (
        patches
        if video.projection is None
        else gelu(
            patches @ video.projection.dense.kernel.numpy() + video.projection.dense.bias.numpy()
        )
    )
    np.testing.assert_allclose(video(clip).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_dropout_rates_as_vatt():
    """One rate (0.1) on attention probabilities and output, MLP hidden and output, after the
    final norm and after adding positions (VATT's configs and common/transformers.py)."""
    model = build_vatt("micro")
    model(dummy_inputs(model.vatt_config), training=False)
    for block in model.encoders["video"].blocks:
        config = block.get_config()
        assert config["attention_dropout"] == config["inner_dropout"] == 0.1
        assert config["output_dropout"] == 0.1
        assert block._attention_layer._dropout == 0.1
    # q, k, v, o initialised as VATT's Dense(d, d) kernels: Glorot-uniform, limit sqrt(6 / 2d).
    attention = model.encoders["video"].blocks[0]._attention_layer
    limit = np.sqrt(6 / (2 * model.vatt_config.hidden_size))
    for dense in (attention._query_dense, attention._output_dense):
        kernel = np.abs(dense.kernel.numpy())
        assert 0.9 * limit < kernel.max() <= limit
    assert model.encoders["video"].final_dropout.rate == 0.1
    assert model.video_positions.dropout.rate == 0.1
    assert build_vatt("micro", dropout_rate=0.0).vatt_config.attention_dropout == 0.0
    assert build_vatt("micro", attention_dropout_rate=0.2).vatt_config.attention_dropout == 0.2


def test_fac_head_layer_order_as_vatt():
    """video_va = BN(W2 ReLU(BN(W1 v))), video_vt = BN(W3 ReLU(video_va)) (Dense without bias,
    BatchNorm on the batch's statistics in training), audio_va = A a + a0, text_vt = T t + t0:
    a NumPy reference of VATT's FACHead (modeling/heads/bridge.py, mlp_lib.ReluDenseBN)."""
    model = build_vatt("micro")
    config = model.vatt_config
    inputs = random_inputs(config, k=1)
    model(inputs, training=False)
    head = model.fac_head
    norms = [head.hidden_to_va.pre_batch_norm, head.hidden_to_va.batch_norm]
    norms.append(head.va_to_vt.batch_norm)
    rng = np.random.default_rng(1)
    for bn in norms:  # non-trivial scale and offset
        bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape))
        bn.beta.assign(rng.normal(size=bn.beta.shape))
    assert all(bn.synchronized and bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in norms)
    assert not head.video_to_hidden.use_bias and not head.hidden_to_va.dense.use_bias
    assert not head.va_to_vt.dense.use_bias
    assert head.va_to_vt.pre_batch_norm is None

    def batch_norm(x, bn):
        mean, var = x.mean(0), x.var(0)
        return (x - mean) / np.sqrt(var + 1e-5) * bn.gamma.numpy() + bn.beta.numpy()

    relu = lambda x: np.maximum(x, 0.0)
    pooled = {m: rng.normal(size=(6, config.post_projection_dim)) for m in MODALITIES}
    out = head({m: tf.constant(v, tf.float32) for m, v in pooled.items()}, training=True)
    w1 = head.video_to_hidden.kernel.numpy()
    w2, w3 = head.hidden_to_va.dense.kernel.numpy(), head.va_to_vt.dense.kernel.numpy()
    video_va = batch_norm(relu(batch_norm(pooled["video"] @ w1, norms[0])) @ w2, norms[1])
    video_vt = batch_norm(relu(video_va) @ w3, norms[2])
    audio_va = pooled["audio"] @ head.audio_to_va.kernel.numpy() + head.audio_to_va.bias.numpy()
    text_vt = pooled["text"] @ head.text_to_vt.kernel.numpy() + head.text_to_vt.bias.numpy()
    for name, expected in [
        ("video_va", video_va),
        ("video_vt", video_vt),
        ("audio_va", audio_va),
        ("text_vt", text_vt),
    ]:
        np.testing.assert_allclose(out[name], expected, rtol=1e-4, atol=1e-4, err_msg=name)


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
    assert ms.encoders["video"].count_params() == ms.encoders["audio"].count_params() == encoder
    # T5 (VATT-MS text, tests/test_t5_text.py): no biases, an RMS norm (d) and a LayerNorm (2 d)
    # per layer, a final RMS norm (d), one relative bias table (32 buckets x heads).
    d, f = config.hidden_size, config.mlp_dim
    t5 = config.num_layers * (d + 4 * d * d + 2 * d + 2 * d * f) + d + 32 * config.num_heads
    assert ms.encoders["text"].count_params() == t5


# --- DropToken ------------------------------------------------------------------------------


def test_drop_token_keeps_a_random_ordered_subset_per_example():
    model = build_vatt("tiny", dropout_rate=0.0)  # only DropToken is random
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


def test_fine_tuning_features_keep_every_token_and_leave_the_head_alone():
    """video_features (fine-tuning): no DropToken when training (with dropout off, training and
    inference give the same feature), the pooled feature of encode_video, no FAC head call."""
    model = build_vatt("tiny", dropout_rate=0.0)
    inputs = random_inputs(model.vatt_config, batch=4)
    model(inputs, training=False)
    head_stats = [v.numpy().copy() for v in model.fac_head.non_trainable_variables]
    trained = model.video_features(inputs["video"], training=True).numpy()
    inferred = model.video_features(inputs["video"], training=False).numpy()
    np.testing.assert_allclose(trained, inferred, atol=1e-6)
    np.testing.assert_allclose(
        inferred, model.encode_video(inputs["video"], training=False)["features"], atol=1e-6
    )
    for before, v in zip(head_stats, model.fac_head.non_trainable_variables):
        np.testing.assert_array_equal(before, v.numpy())


def test_drop_token_stream_is_seeded_and_checkpointed(tmp_path):
    a, b = (
        build_vatt("micro", seed=3, dropout_rate=0.0),
        build_vatt("micro", seed=3, dropout_rate=0.0),
    )
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


# What VATT's code gives, read off google-research/google-research vatt/ (file per term). Every
# Dense / attention projection has a bias unless noted; d_kv = 64 per head, so heads x 64 = d.
V, E, POST = 2**16, 300, 1024  # vocabulary, word2vec width, d_post_proj (configs/unified.py)


def vatt_encoder(d, f, layers):
    """modeling/common/transformers.py TransformerEncoder (pre-norm): per layer LayerNorm (2d),
    q, k, v, o (4 (d d + d)), FeedForward LayerNorm (2d), wi (d f + f), wo (f d + d); final
    LayerNorm (2d)."""
    return layers * (2 * d + 4 * (d * d + d) + 2 * d + d * f + f + f * d + d) + 2 * d


def vatt_fac_head(video, audio, text, va=512, vt=256):
    """modeling/heads/bridge.py FACHead + mlp_lib.ReluDenseBN, trainable: vid_to_hid (no bias),
    hid_to_va = BN + Dense (no bias) + BN, va_to_vat = Dense (no bias) + BN, aud_to_va and
    txt_to_vat with bias; BN = gamma + beta (the moving statistics are not trainable)."""
    return (
        video * va
        + 2 * va
        + va * va
        + 2 * va
        + va * vt
        + 2 * vt
        + (audio * va + va)
        + (text * vt + vt)
    )


BN_MOVING = 2 * 512 + 2 * 512 + 2 * 256  # moving mean and variance of the head's 3 BatchNorms


def vatt_ma(d, f, layers):
    """modeling/backbones/unified/uvatt.py UniversalVATT (configs/unified.py sizes), trainable:
    Conv3D 4x16x16x3 -> d, Conv1D 128 -> d, pre-projections Dense(d) on video, audio (d) and
    text (300) inputs, positional tables 8 + 14 + 14 / 1200 / 16 rows of d, each followed by a
    LayerNorm (2d; transformers.py), three aggregation tokens (d), the encoder, three
    post-projections Dense(1024), then the FAC head on 1024-d features. The 2^16 x 300 word
    table is frozen (txt_embedding_trainable=False)."""
    tokenizers = (4 * 16 * 16 * 3 * d + d) + (128 * d + d)
    pre = 2 * (d * d + d) + (E * d + d)
    positions = (8 + 14 + 14) * d + 1200 * d + 16 * d + 3 * 2 * d
    post = 3 * (d * POST + POST)
    return (
        tokenizers
        + pre
        + positions
        + 3 * d
        + vatt_encoder(d, f, layers)
        + post
        + vatt_fac_head(POST, POST, POST)
    )


def vatt_ms():
    """configs/multimodal.py TxBackboneConfig: vit_medium + wat_base + t5_small, trainable.
    video/vitx3d.py and audio/autx1d.py (pre_projection and post_projection False in
    configs/video.py, audio.py): patch convolution to d, positional tables + LayerNorm, one
    aggregation token (d), the encoder. text/factory.py LanguageModel + text/t5.py T5Encoder
    (configs/text.py T5Small): aggregation token of 300 (prepended to the word embeddings),
    pre_proj Dense(512, no bias), per layer q, k, v, o without bias (4 d d), a T5LayerNorm (d,
    scale only) before attention, a Keras LayerNorm (2d) and wi, wo without bias in the
    feed-forward; relative attention bias 32 buckets x 8 heads in layer 0; final T5LayerNorm
    (d); no post-projection. FAC head on 1024 / 768 / 512-d features."""
    video = (4 * 16 * 16 * 3 * 1024 + 1024) + 36 * 1024 + 2 * 1024 + 1024
    video += vatt_encoder(1024, 4096, 12)
    audio = (128 * 768 + 768) + 1200 * 768 + 2 * 768 + 768 + vatt_encoder(768, 3072, 12)
    d, f = 512, 2048
    text = E + E * d + 6 * (4 * d * d + d + 2 * d + 2 * d * f) + 32 * 8 + d
    return video + audio + text + vatt_fac_head(1024, 768, 512)


EXPECTED = {
    # preset: (VATT's trainable count, ours minus VATT's)
    "small": (vatt_ma(512, 2048, 6), 0),  # VATT has no ut_small: ut_base's code at 6 x 512
    "base": (vatt_ma(768, 3072, 12), 0),  # ut_base
    "medium": (vatt_ma(1024, 4096, 12), 0),  # ut_medium, the paper's model
    "large": (vatt_ma(1024, 4096, 24), 0),  # ut_large
    "medium_base_small": (vatt_ms(), 0),  # tx_fac (VATT-MS), VATT's T5 text encoder
}


def test_expected_counts_as_written():
    """The formulas above, evaluated once by hand (so a formula edit shows)."""
    assert {p: c for p, (c, _) in EXPECTED.items()} == {
        "small": 25_163_008,
        "base": 93_965_568,
        "medium": 162_990_336,
        "large": 314_145_024,
        "medium_base_small": 260_905_772,
    }


def _zero_initializers(monkeypatch):
    """Counts do not depend on values: skip drawing 10^8 random numbers per model."""
    zeros = lambda self, shape, dtype=None, **kwargs: tf.zeros(shape, dtype or tf.float32)
    for cls in (
        tf.keras.initializers.VarianceScaling,  # Glorot, He, Lecun
        tf.keras.initializers.RandomUniform,
        tf.keras.initializers.RandomNormal,
        tf.keras.initializers.TruncatedNormal,
    ):
        monkeypatch.setattr(cls, "__call__", zeros)


@pytest.mark.parametrize(
    "preset",
    ["small", "base", "medium", pytest.param("large", marks=pytest.mark.slow), "medium_base_small"],
)
def test_parameter_counts_match_vatts_code(preset, monkeypatch):
    _zero_initializers(monkeypatch)
    variant = "specific" if preset == "medium_base_small" else "agnostic"
    model = build_vatt(preset, variant)
    config = model.vatt_config
    t, h, w = config.video_patch_size  # one patch per axis: the tables are interpolated
    model(
        {
            "video": tf.zeros([1, t, h, w, 3]),
            "audio": tf.zeros([1, 4 * config.audio_patch_size]),
            "text": tf.ones([1, 1, config.text_grid], tf.int32),
        },
        training=False,
    )
    trainable = sum(v.shape.num_elements() for v in model.trainable_variables)
    frozen = sum(v.shape.num_elements() for v in model.non_trainable_variables)
    vatt, difference = EXPECTED[preset]
    assert trainable == vatt + difference
    assert frozen == V * E + BN_MOVING  # the word table and the head's moving statistics


def test_presets_and_overrides():
    assert [
        (PRESETS[p].num_layers, PRESETS[p].hidden_size, PRESETS[p].num_heads, PRESETS[p].mlp_dim)
        for p in ("small", "base", "medium", "large")
    ] == [(6, 512, 8, 2048), (12, 768, 12, 3072), (12, 1024, 16, 4096), (24, 1024, 16, 4096)]
    ms = PRESETS["medium_base_small"]
    assert [tuple(dataclasses.astuple(ms.encoder_size(m))) for m in MODALITIES] == [
        (12, 1024, 16, 4096),  # vit_medium
        (12, 768, 12, 3072),  # wat_base
        (6, 512, 8, 2048),  # t5_small
    ]
    with pytest.raises(ValueError, match="variant='specific'"):
        build_vatt("medium_base_small", "agnostic")
    config = get_config("medium", num_layers=2, va_dim=128)
    assert (config.num_layers, config.va_dim, config.hidden_size) == (2, 128, 1024)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_layers = 3
    with pytest.raises(ValueError, match="Unknown VATT config fields"):
        get_config("tiny", hiden_size=3)
    with pytest.raises(ValueError, match="variant"):
        build_vatt("tiny", "shared")


def test_build_vatt_is_gin_configurable(clean_gin):
    with gin.unlock_config():
        gin.parse_config(
            [
                "build_vatt.preset = 'micro'",
                "build_vatt.variant = 'specific'",
                "build_vatt.num_layers = 2",
            ]
        )
    model = build_vatt()
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


def test_word_table_frozen_by_default_trainable_only_by_switch():
    for trainable in (False, True):
        model = build_vatt("micro", trainable_word_vectors=trainable)
        model(dummy_inputs(model.vatt_config))
        table = model.text_tokenizer.word_embedding.embeddings
        assert any(v is table for v in model.trainable_variables) == trainable
        assert any(v is table for v in model.non_trainable_variables) != trainable


def test_word_vectors_non_finite_raises(tmp_path):
    config = PRESETS["micro"]
    vectors = np.zeros((config.vocab_size, config.word_dim), np.float32)
    vectors[3, 2] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, vectors)
    with pytest.raises(ValueError, match="finite") as error:
        build_vatt("micro", word_vectors_path=str(path))
    assert str(path) in str(error.value)


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
    # VATT's buckets: table row i sits at i / 4, output row j is read at j / 8, so rows
    # 0, 2, 4, 6 of an 8-long grid coincide with the table's rows, through which the spline
    # passes.
    wide = layer(tf.zeros([1, 8, 3, 8]))[0].numpy()  # (8, 3, 8)
    np.testing.assert_allclose(
        wide[::2] - h[None, :], np.broadcast_to(t[:, None], (4, 3, 8)), atol=1e-4
    )
    assert not np.allclose(wide[1], wide[0], atol=1e-4)
    # Initialised truncated-normal with stddev D^-0.5 (VATT's initializer_range).
    big = FactorisedPositionalEmbedding((2000,), ("temporal",))
    big(tf.zeros([1, 2000, 64]))
    assert abs(big.tables[0].numpy().std() - 64**-0.5 * 0.88) < 0.01  # truncation: x 0.88


def test_positional_encoding_is_tokens_plus_normalised_tables_then_dropout():
    """VATT's SpatioTemporalEmbeddings: dropout(tokens + LayerNorm(t + h + w))."""
    layer = PositionalEncoding((2, 3), ("temporal", "height"), dropout_rate=0.5)
    tokens = np.random.default_rng(0).normal(size=(2, 2, 3, 8)).astype(np.float32)
    out = layer(tokens, training=False).numpy()
    t, h = (w.numpy() for w in layer.embedding.tables)
    positions = t[:, None] + h[None, :]  # (2, 3, 8)
    normalised = (positions - positions.mean(-1, keepdims=True)) / np.sqrt(
        positions.var(-1, keepdims=True) + 1e-6
    )
    np.testing.assert_allclose(out, tokens + normalised[None], rtol=1e-4, atol=1e-4)
    dropped = layer(tokens, training=True).numpy()
    zero = dropped == 0
    assert 0.2 < zero.mean() < 0.8  # rate 0.5
    np.testing.assert_allclose(dropped[~zero], 2 * out[~zero], rtol=1e-4, atol=1e-4)


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
