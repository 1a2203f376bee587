"""VATT (Akbari et al. 2021) as used by the gradient-harmonization paper (its Fig. 2).

Per modality: tokenizer (patches / words [+ pre-projection]) -> + positional encoding
(LayerNorm of the factorised tables, dropout) -> DropToken (video, audio; training only) ->
prepend aggregation token -> pre-norm Transformer encoder -> the aggregation token's output
[-> post-projection] = pooled feature -> FAC head.

variant='agnostic' (VATT-MA, the paper's model; VATT's UniversalVATT): one encoder shared by
video, audio and text; per-modality pre-projections Dense(D, GELU) and post-projections
Dense(post_projection_dim, GELU).
variant='specific' (VATT-MS, paper Table 3; VATT's ViT / WaT / T5 backbones): one encoder per
modality with its own shape (preset 'medium_base_small': video 12 x 1024, audio 12 x 768, text
6 x 512); no pre- or post-projection on video and audio. Text (config `text_backbone`, 't5' by
default, VATT's T5 text model): word vectors -> prepend the aggregation token (word width) ->
Dense(D_text, GELU, no bias) -> VATT's T5 encoder stack (`vatt_gh.models.t5_text`: relative
position bias instead of a positional table) -> the aggregation token's output.
Input sizes (frames, resolution, audio length, text length) come from the input.
"""

from typing import Dict

import tensorflow as tf

import gin
from vatt_gh.models.backbone import AggregationToken, TransformerEncoder, drop_tokens
from vatt_gh.models.heads import FACHead
from vatt_gh.models.positional import PositionalEncoding
from vatt_gh.models.precision import policy_scope
from vatt_gh.models.presets import VattConfig, get_config
from vatt_gh.models.t5_text import T5Encoder
from vatt_gh.models.tokenizers import AudioTokenizer, Projection, TextTokenizer, VideoTokenizer

MODALITIES = ("video", "audio", "text")
VARIANTS = ("agnostic", "specific")
TEXT_BACKBONES = ("t5", "transformer")  # VATT-MS's text encoder (VattConfig.text_backbone)


def _make_encoder(config: VattConfig, modality: str, name: str, use_bias=True):
    size = config.encoder_size(modality)
    return TransformerEncoder(
        num_layers=size.num_layers,
        hidden_size=size.hidden_size,
        num_heads=size.num_heads,
        mlp_dim=size.mlp_dim,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout,
        norm_epsilon=config.norm_epsilon,
        use_bias=use_bias,
        name=name,
    )


class VATT(tf.keras.Model):
    """Video-audio-text Transformer with a FAC head. See the module docstring for the data flow.

    call(inputs) with inputs {'video': (B, T, H, W, 3) float32 in [-1, 1], 'audio': (B, S) float32
    waveform, 'text': (B, K, L) int32 ids (0 = pad)} (any subset) returns
    {'video_va': (B, va), 'video_vt': (B, vt), 'audio_va': (B, va), 'text_vt': (B, K, vt),
     'video_features': (B, F_v), 'audio_features': (B, F_a), 'text_features': (B, K, F_t)}
    with F the pooled feature width (`feature_dim`).
    """

    def __init__(self, config: VattConfig, variant: str = "agnostic", **kwargs):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"Unknown VATT variant {variant!r}; choose one of {VARIANTS}.")
        self.vatt_config = config
        self.variant = variant
        agnostic = variant == "agnostic"
        width = {m: config.encoder_size(m).hidden_size for m in MODALITIES}
        if agnostic and (config.audio_encoder or config.text_encoder):
            raise ValueError(
                "audio_encoder / text_encoder sizes need variant='specific' (one encoder per "
                "modality); VATT-MA shares one encoder."
            )
        if config.text_backbone not in (None,) + TEXT_BACKBONES:
            raise ValueError(
                f"text_backbone {config.text_backbone!r}: choose one of {TEXT_BACKBONES}."
            )
        if agnostic and config.text_backbone is not None:
            raise ValueError(
                f"text_backbone {config.text_backbone!r} needs variant='specific'; VATT-MA's "
                "text goes through the shared encoder."
            )
        # VATT-MS's text: VATT's T5 encoder unless the pre-norm block is asked for.
        self.t5_text = not agnostic and config.text_backbone in (None, "t5")
        for m in ("video", "audio"):
            if not agnostic and config.patch_embedding_dim(m) != width[m]:
                raise ValueError(
                    f"variant='specific' has no {m} pre-projection: patch_dim must be None or "
                    f"{width[m]}, got {config.patch_dim}."
                )

        # 1. Tokenizers: raw signal -> token grid of the encoder's width.
        self.video_tokenizer = VideoTokenizer(
            config.video_patch_size,
            config.patch_embedding_dim("video"),
            width["video"] if agnostic else None,
            name="video_tokenizer",
        )
        self.audio_tokenizer = AudioTokenizer(
            config.audio_patch_size,
            config.patch_embedding_dim("audio"),
            width["audio"] if agnostic else None,
            name="audio_tokenizer",
        )
        self.text_tokenizer = TextTokenizer(
            config.vocab_size,
            config.word_dim,
            width["text"],
            config.word_vectors_path,
            config.trainable_word_vectors,
            projection_bias=agnostic,  # VATT-MS's text pre-projection has no bias
            aggregation_token=self.t5_text,  # T5: the token in the word space
            name="text_tokenizer",
        )

        # 2. Positional encodings: LayerNorm(learned factorised tables), added, then dropout.
        def positions(grid, axes, name):
            return PositionalEncoding(
                grid, axes, config.norm_epsilon, config.dropout_rate, name=name
            )

        self.video_positions = positions(
            config.video_grid, ("temporal", "height", "width"), "video_positions"
        )
        self.audio_positions = positions((config.audio_grid,), ("temporal",), "audio_positions")
        # T5's position signal is its relative attention bias: no table.
        self.text_positions = (
            None
            if self.t5_text
            else positions((config.text_grid,), ("temporal",), "text_positions")
        )

        # 3. One learned aggregation token per modality.
        self.video_aggregation = AggregationToken(name="video_aggregation_token")
        self.audio_aggregation = AggregationToken(name="audio_aggregation_token")
        self.text_aggregation = (
            None if self.t5_text else AggregationToken(name="text_aggregation_token")
        )

        # 4. The Transformer: shared (VATT-MA) or one per modality (VATT-MS).
        if agnostic:
            shared = _make_encoder(config, "video", "encoder")
            self.encoders = {m: shared for m in MODALITIES}
        else:
            self.encoders = {
                m: _make_encoder(config, m, f"{m}_encoder") for m in ("video", "audio")
            }
            if self.t5_text:
                size = config.encoder_size("text")
                self.encoders["text"] = T5Encoder(
                    num_layers=size.num_layers,
                    hidden_size=size.hidden_size,
                    num_heads=size.num_heads,
                    mlp_dim=size.mlp_dim,
                    dropout_rate=config.dropout_rate,
                    norm_epsilon=config.norm_epsilon,
                    name="text_encoder",
                )
            else:
                self.encoders["text"] = _make_encoder(
                    config, "text", "text_encoder", use_bias=False
                )

        # 5. Post-projections of the pooled feature (VATT-MA only).
        self.post_projections = {
            m: Projection(config.post_projection_dim, name=f"{m}_post_projection")
            for m in (MODALITIES if agnostic else ())
        }
        self.feature_dim = {
            m: config.post_projection_dim if agnostic else width[m] for m in MODALITIES
        }

        # 6. FAC head into the va (video-audio) and vt (video-text) spaces.
        with policy_scope("float32"):
            self.fac_head = FACHead(
                config.va_dim, config.vt_dim, config.bn_momentum, config.bn_epsilon, name="fac_head"
            )

        # DropToken's random stream: a model attribute, so it is checkpointed.
        self.drop_token_generator = tf.random.Generator.from_seed(config.seed)

    def _encode_tokens(
        self, modality: str, tokens: tf.Tensor, attention_mask=None, training=None
    ) -> tf.Tensor:
        """(B, N, D) positioned tokens -> (B, F) pooled feature: the aggregation token's output
        [through the post-projection]."""
        aggregation = {
            "video": self.video_aggregation,
            "audio": self.audio_aggregation,
            "text": self.text_aggregation,
        }[modality]
        tokens = aggregation(tokens)  # (B, 1 + N, D)
        encoded = self.encoders[modality](
            tokens, attention_mask=attention_mask, training=training
        )  # (B, 1 + N, D)
        pooled = encoded[:, 0]  # (B, D)
        # VATT post-projects every token and pools token 0; only the pooled one is used here.
        projection = self.post_projections.get(modality)
        return pooled if projection is None else projection(pooled)  # (B, F)

    def _drop_tokens(self, tokens: tf.Tensor, training) -> tf.Tensor:
        if training and self.vatt_config.drop_token_rate > 0:
            return drop_tokens(tokens, self.vatt_config.drop_token_rate, self.drop_token_generator)
        return tokens

    def video_tokens(self, video: tf.Tensor, training=None, drop_token=True) -> tf.Tensor:
        """(B, T, H, W, 3) -> (B, N, D) positioned tokens, after DropToken when training (unless
        `drop_token` is False: fine-tuning, as VATT, keeps every token)."""
        tokens = self.video_positions(
            self.video_tokenizer(video), training=training
        )  # (B, t, h, w, D)
        t, h, w, d = tokens.shape[1:]
        tokens = tf.reshape(tokens, [-1, t * h * w, d])  # (B, t*h*w, D)
        return self._drop_tokens(tokens, training) if drop_token else tokens

    def video_features(self, video: tf.Tensor, training=None, drop_token=False) -> tf.Tensor:
        """(B, T, H, W, 3) -> (B, F) pooled video feature for fine-tuning: the backbone with its
        dropout when training, DropToken only if asked, and no FAC head (whose BatchNorm
        statistics stay those of pre-training)."""
        tokens = self.video_tokens(video, training, drop_token=drop_token)
        return self._encode_tokens("video", tokens, training=training)

    def audio_tokens(self, audio: tf.Tensor, training=None) -> tf.Tensor:
        """(B, S) -> (B, N, D) positioned tokens, after DropToken when training."""
        tokens = self.audio_positions(self.audio_tokenizer(audio), training=training)  # (B, n, D)
        return self._drop_tokens(tokens, training)

    def text_tokens(self, text: tf.Tensor, training=None):
        """(N, L) ids -> ((N, L, D) positioned tokens, (N, 1 + L, 1 + L) attention mask).

        Pads (id 0) are never attended to; the aggregation token always is. No DropToken on text.
        Not for the T5 text encoder (no positions; `_t5_text_features`).
        """
        tokens = self.text_positions(self.text_tokenizer(text), training=training)  # (N, L, D)
        attended = tf.concat(
            [tf.ones_like(text[:, :1], tf.bool), tf.not_equal(text, 0)], axis=1
        )  # (N, 1 + L)
        length = tf.shape(attended)[1]
        attention_mask = tf.tile(
            tf.cast(attended, tf.int32)[:, None, :], [1, length, 1]
        )  # (N, 1 + L, 1 + L)
        return tokens, attention_mask

    def encode_video(self, video: tf.Tensor, training=None) -> Dict[str, tf.Tensor]:
        """(B, T, H, W, 3) -> {'features': (B, F), 'va': (B, va), 'vt': (B, vt)}."""
        features = self._encode_tokens(
            "video", self.video_tokens(video, training), training=training
        )
        head = self.fac_head({"video": features}, training=training)
        return {"features": features, "va": head["video_va"], "vt": head["video_vt"]}

    def encode_audio(self, audio: tf.Tensor, training=None) -> Dict[str, tf.Tensor]:
        """(B, S) -> {'features': (B, F), 'va': (B, va)}."""
        features = self._encode_tokens(
            "audio", self.audio_tokens(audio, training), training=training
        )
        head = self.fac_head({"audio": features}, training=training)
        return {"features": features, "va": head["audio_va"]}

    def _t5_text_features(self, text: tf.Tensor, training=None) -> tf.Tensor:
        """(N, L) ids -> (N, D) VATT's T5 text model: the aggregation token is prepended to the
        word vectors, all projected, encoded with pads masked as keys; token 0 is pooled."""
        tokens = self.text_tokenizer(text)  # (N, 1 + L, D)
        key_mask = tf.concat(
            [tf.ones_like(text[:, :1]), tf.cast(tf.not_equal(text, 0), text.dtype)], axis=1
        )  # (N, 1 + L): the aggregation token and the words are attended to, pads never
        return self.encoders["text"](tokens, key_mask, training=training)[:, 0]

    def encode_text(self, text: tf.Tensor, training=None) -> Dict[str, tf.Tensor]:
        """(N, L) int ids -> {'features': (N, F), 'vt': (N, vt)}."""
        if self.t5_text:
            features = self._t5_text_features(text, training)
        else:
            tokens, attention_mask = self.text_tokens(text, training)
            features = self._encode_tokens("text", tokens, attention_mask, training=training)
        head = self.fac_head({"text": features}, training=training)
        return {"features": features, "vt": head["text_vt"]}

    def call(self, inputs: Dict[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
        outputs = {}
        if "video" in inputs:
            video = self.encode_video(inputs["video"], training)
            outputs.update(
                video_features=video["features"], video_va=video["va"], video_vt=video["vt"]
            )
        if "audio" in inputs:
            audio = self.encode_audio(inputs["audio"], training)
            outputs.update(audio_features=audio["features"], audio_va=audio["va"])
        if "text" in inputs:
            text = inputs["text"]  # (B, K, L)
            if text.shape.rank != 3:
                raise ValueError(f"inputs['text'] must be (B, K, L) token ids, got {text.shape}.")
            k, length = text.shape[1], text.shape[2]
            encoded = self.encode_text(tf.reshape(text, [-1, length]), training)  # (B*K, ...)
            outputs.update(
                text_features=tf.reshape(encoded["features"], [-1, k, self.feature_dim["text"]]),
                text_vt=tf.reshape(encoded["vt"], [-1, k, self.vatt_config.vt_dim]),
            )
        return outputs


def dummy_inputs(config: VattConfig, batch_size: int = 2, num_texts: int = 1):
    """Zero inputs at the configured token grids; `model(dummy_inputs(cfg))` builds every layer."""
    t, h, w = (g * p for g, p in zip(config.video_grid, config.video_patch_size))
    return {
        "video": tf.zeros([batch_size, t, h, w, 3]),
        "audio": tf.zeros([batch_size, config.audio_grid * config.audio_patch_size]),
        "text": tf.ones([batch_size, num_texts, config.text_grid], tf.int32),
    }


@gin.configurable
def build_vatt(
    preset: str = "medium", variant: str = "agnostic", precision: str = "float32", **overrides
) -> VATT:
    """Builds (unbuilt weights) VATT from a size preset with keyword overrides of any field.

    precision: 'float32' or 'mixed_bfloat16' (bfloat16 layers, float32 variables and
    statistics: `vatt_gh.models.precision`)."""
    with policy_scope(precision):
        return VATT(get_config(preset, **overrides), variant=variant, name=f"vatt_{variant}")
