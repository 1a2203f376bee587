"""Embeddings and pooled features of a record set, through the evaluation pipeline.

    config = eval_config_for_run("/data/youcook2/val-*.tfrecord", vocab_path, num_windows=4)
    arrays = extract(model.vatt, eval_dataset(config, batch_size=16))
    video = clip_embeddings(arrays["video_vt"])                          # (N, 256), windows averaged
    text = text_embeddings(arrays["text_vt"], arrays["text_mask"])       # (N, 256)

The input sizes (frames, crop, resize, tokens) default to the pre-training run's
(`PretrainConfig` from its operative config) so the eval clips match what the model saw; an
explicit `EvalConfig.*` gin binding wins. Frame rate and stride describe the record set itself and
come from `EvalConfig` (gin) only.
"""

import dataclasses
import os
from typing import Dict, Iterable, Optional

import numpy as np
import tensorflow as tf

import gin
from vatt_gh.data.configs import EvalConfig, PretrainConfig
from vatt_gh.evaluation.retrieval import l2_normalize

# EvalConfig fields taken from the pre-training config unless bound for EvalConfig in gin.
FROM_PRETRAINING = ("num_frames", "crop_size", "min_resize", "max_tokens", "tokenizer")
MODALITIES = ("video", "audio", "text")


def _bound(parameter: str) -> bool:
    try:
        gin.query_parameter(parameter)
        return True
    except ValueError:
        return False


def resolve_vocab(model_dir: Optional[str], vocab_path: Optional[str] = None) -> str:
    """The vocabulary the run was trained with: the flag, else <model_dir>/data/vocab.txt (the
    synthetic demo's), else a gin-bound EvalConfig / PretrainConfig vocab_path. Raises ValueError.
    """
    candidates = [vocab_path] if vocab_path else []
    if model_dir:
        candidates.append(os.path.join(model_dir, "data", "vocab.txt"))
    for parameter in ("EvalConfig.vocab_path", "PretrainConfig.vocab_path"):
        if _bound(parameter):
            candidates.append(gin.query_parameter(parameter))
    for path in candidates:
        if path and tf.io.gfile.exists(path):
            return path
        if path and path == vocab_path:
            raise ValueError(f"--vocab_path {path!r} does not exist")
    raise ValueError(f"no vocabulary found (tried {candidates}): pass --vocab_path")


def eval_config_for_run(file_pattern: str, vocab_path: str, **overrides) -> EvalConfig:
    """EvalConfig for `file_pattern` with the pre-training run's input sizes (see module doc)."""
    try:
        pretraining = PretrainConfig()
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot read the run's PretrainConfig from gin: {e}") from None
    fields = {
        name: getattr(pretraining, name)
        for name in FROM_PRETRAINING
        if not _bound(f"EvalConfig.{name}")
    }
    fields.update(file_pattern=file_pattern, vocab_path=vocab_path)
    fields.update(overrides)
    return dataclasses.replace(EvalConfig(), **fields)


def _encoder(vatt, modalities):
    """tf.function: an eval batch -> per-window / per-caption outputs of the chosen modalities."""

    def encode(batch):
        out = {}
        if "video" in modalities:
            video = batch["video"]  # (B, W, T, H, W', 3)
            shape = tf.shape(video)
            encoded = vatt.encode_video(
                tf.reshape(video, tf.concat([[-1], shape[2:]], 0)), training=False
            )
            for name in ("features", "va", "vt"):
                value = encoded[name]  # (B*W, D)
                out[f"video_{name}"] = tf.reshape(value, [shape[0], shape[1], -1])
        if "audio" in modalities:
            audio = batch["audio"]  # (B, W, S)
            shape = tf.shape(audio)
            encoded = vatt.encode_audio(tf.reshape(audio, [-1, shape[2]]), training=False)
            for name in ("features", "va"):
                out[f"audio_{name}"] = tf.reshape(encoded[name], [shape[0], shape[1], -1])
        if "text" in modalities:
            text = batch["text"]  # (B, K, L)
            shape = tf.shape(text)
            encoded = vatt.encode_text(tf.reshape(text, [-1, shape[2]]), training=False)
            for name in ("features", "vt"):
                out[f"text_{name}"] = tf.reshape(encoded[name], [shape[0], shape[1], -1])
        return out

    return tf.function(encode, reduce_retracing=True)


def extract(
    vatt,
    dataset: tf.data.Dataset,
    modalities: Iterable[str] = MODALITIES,
    max_clips: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """Runs the frozen model (training=False) over every eval batch; NumPy arrays over clips.

    Returns, for the chosen modalities, 'video_features' / 'video_va' / 'video_vt' (N, W, .),
    'audio_features' / 'audio_va' (N, W, .), 'text_features' / 'text_vt' (N, K, .), and always
    'text_mask' (N, K), 'audio_mask', 'label', 'aligned_va', 'aligned_vt' (N,), 'clip_id' (N,) str.
    """
    modalities = tuple(modalities)
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
    encode = _encoder(vatt, modalities)
    keep = ("text_mask", "audio_mask", "label", "aligned_va", "aligned_vt", "clip_id")
    chunks: Dict[str, list] = {}
    count = 0
    for batch in dataset:
        inputs = {m: batch[m] for m in modalities}
        outputs = {k: v.numpy() for k, v in encode(inputs).items()}
        outputs.update({k: batch[k].numpy() for k in keep})
        for key, value in outputs.items():
            chunks.setdefault(key, []).append(value)
        count += len(outputs["clip_id"])
        if max_clips is not None and count >= max_clips:
            break
    if not chunks:
        raise ValueError("the record set yielded no clips")
    arrays = {k: np.concatenate(v, axis=0)[:max_clips] for k, v in chunks.items()}
    arrays["clip_id"] = np.array([c.decode("utf-8") for c in arrays["clip_id"]])
    return arrays


def clip_embeddings(window_embeddings: np.ndarray) -> np.ndarray:
    """(N, W, D) per-window embeddings -> (N, D): mean of the L2-normalised windows, normalised."""
    return l2_normalize(l2_normalize(window_embeddings).mean(axis=1))


def text_embeddings(caption_embeddings: np.ndarray, text_mask: np.ndarray) -> np.ndarray:
    """(N, K, D) caption embeddings, (N, K) mask -> (N, D): masked mean of the normalised
    captions, normalised (K = 1, one caption per clip, is the YouCook2 / MSR-VTT protocol)."""
    mask = np.asarray(text_mask, np.float64)[..., None]  # (N, K, 1)
    total = (l2_normalize(caption_embeddings) * mask).sum(axis=1)  # (N, D)
    return l2_normalize(total / np.maximum(mask.sum(axis=1), 1.0))
