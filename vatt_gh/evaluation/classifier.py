"""Fine-tuning the pre-trained video backbone with a linear classifier (paper Table 1, Kinetics-400).

The VATT recipe (VATT code, `configs/experiment.py` Finetune): SGD with momentum 0.9, learning rate
0.005 with 2.5k linear warm-up steps then cosine decay over 100k steps, gradients of the backbone
clipped to global norm 0.75 (the classifier's are not clipped), label smoothing 0.1. The backbone
runs in training mode, with DropToken off (`drop_token`, below). Training clips use the pre-training augmentation
(random window, scale jitter, crop, flip, colour jitter); test clips are scored as VATT scores
them, on `eval_windows` (4) evenly spaced windows x `eval_crops` (3) crops along the long side,
the softmax probabilities of the 12 views averaged.

    classifier = VideoClassifier(model.vatt, num_classes)
    train_fn = make_train_step(classifier, finetune_optimizer(config), config, strategy)
    metrics = evaluate_classifier(classifier, test_dataset)

The run (checkpoints, resume, pre-emption) is the training loop's: vatt_gh/finetuning.py.
"""

import dataclasses
from typing import Dict

import numpy as np
import tensorflow as tf
from official.modeling import optimization

import gin
from vatt_gh.evaluation import accuracy

SUM = tf.distribute.ReduceOp.SUM


@gin.configurable
@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning recipe (defaults: VATT code's Kinetics-400 fine-tuning)."""

    train_steps: int = 100_000
    global_batch_size: int = 64
    learning_rate: float = 0.005
    warmup_steps: int = 2500
    end_learning_rate: float = 0.0  # cosine decays to this
    momentum: float = 0.9
    label_smoothing: float = 0.1
    backbone_clip_norm: float = 0.75  # clip by global norm; 0 = off
    head_clip_norm: float = 0.0  # VATT: no clipping of the classifier
    head_dropout: float = 0.0  # dropout on the pooled feature before the classifier
    # DropToken while fine-tuning. VATT's ViT configs sample patches by default; off here, so
    # fine-tuning sees every token as evaluation does (on the tests' 60-step runs DropToken
    # held top-1 at 47% where every token gives 100%).
    drop_token: bool = False
    eval_windows: int = 4
    eval_crops: int = 3  # VATT: 3 crops per window; 1 = the central crop (EvalConfig.num_crops)
    eval_batch_size: int = 8
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    summary_every: int = 100
    seed: int = 0


class VideoClassifier(tf.keras.Model):
    """Pooled video feature of the pre-trained backbone -> dropout -> linear layer -> logits."""

    def __init__(
        self, vatt, num_classes: int, head_dropout: float = 0.0, drop_token=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.vatt = vatt
        self.drop_token = drop_token
        self.num_classes = num_classes
        self.dropout = tf.keras.layers.Dropout(head_dropout)
        # Zero-initialised, as in ViT / big_vision fine-tuning: training starts at uniform logits.
        self.classifier = tf.keras.layers.Dense(
            num_classes, kernel_initializer="zeros", name="classifier"
        )

    def call(self, video, training=False):
        """(B, T, H, W, 3) in [-1, 1] -> (B, num_classes) logits."""
        pooled = self.vatt.video_features(video, training, self.drop_token)  # (B, F)
        return self.classifier(self.dropout(pooled, training=training))

    def is_head(self, variable) -> bool:
        return any(variable is v for v in self.classifier.trainable_variables)


def finetune_optimizer(config: FinetuneConfig):
    """SGD with momentum, linear warm-up then cosine decay (tf-models-official factory)."""
    spec = optimization.OptimizationConfig(
        {
            # (not type 'sgd': its config always carries `decay`, which the new optimizers reject)
            "optimizer": {
                "type": "sgd_experimental",
                "sgd_experimental": {"momentum": config.momentum},
            },
            "learning_rate": {
                "type": "cosine",
                "cosine": {
                    "initial_learning_rate": config.learning_rate,
                    "decay_steps": config.train_steps,
                    "alpha": config.end_learning_rate / config.learning_rate,
                },
            },
            "warmup": {
                "type": "linear",
                "linear": {"warmup_steps": config.warmup_steps, "warmup_learning_rate": 0.0},
            },
        }
    )
    factory = optimization.OptimizerFactory(spec)
    return factory.build_optimizer(factory.build_learning_rate(), use_legacy_optimizer=False)


def smoothed_cross_entropy(logits, labels, num_classes: int, smoothing: float):
    """(B, C) logits, (B,) int labels -> (B,) cross-entropy against (1 - s) one-hot + s / C."""
    targets = tf.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)


def clip_by_global_norm(grads, clip_norm: float):
    """tf.clip_by_global_norm, or the gradients unchanged when clip_norm <= 0."""
    if clip_norm <= 0 or not grads:
        return list(grads)
    return tf.clip_by_global_norm(grads, clip_norm)[0]


def make_train_step(model: VideoClassifier, optimizer, config: FinetuneConfig, strategy):
    """tf.function(iterator) -> {loss, learning_rate}: one distributed step (all-reduce, clip,
    apply); the learning rate is the one of the next step."""
    num_classes = model.num_classes

    def replica_step(batch):
        labels = batch["label"]
        checks = [
            tf.debugging.assert_non_negative(
                labels, message="a training clip has no clip/label/index"
            ),
            tf.debugging.assert_less(
                labels, num_classes, message="a training label is >= --num_classes"
            ),
        ]
        with tf.control_dependencies(checks):
            video = tf.identity(batch["video"])
        with tf.GradientTape() as tape:
            logits = model(video, training=True)  # (B, C)
            per_example = smoothed_cross_entropy(
                logits, labels, num_classes, config.label_smoothing
            )  # (B,)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=config.global_batch_size
            )
        variables = model.trainable_variables
        pairs = [
            (g, v) for g, v in zip(tape.gradient(loss, variables), variables) if g is not None
        ]  # text / audio paths get no gradient
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(SUM, [g for g, _ in pairs])  # sum of per-replica shares = mean
        head = [i for i, (_, v) in enumerate(pairs) if model.is_head(v)]
        body = [i for i in range(len(pairs)) if i not in head]
        clipped = dict(
            zip(body, clip_by_global_norm([grads[i] for i in body], config.backbone_clip_norm))
        )
        clipped.update(
            zip(head, clip_by_global_norm([grads[i] for i in head], config.head_clip_norm))
        )
        optimizer.apply_gradients(
            [(clipped[i], pairs[i][1]) for i in range(len(pairs))], skip_gradients_aggregation=True
        )
        return ctx.all_reduce(SUM, loss)

    @tf.function
    def step(iterator):
        losses = strategy.run(replica_step, args=(next(iterator),))
        loss = strategy.experimental_local_results(losses)[0]
        return {"loss": loss, "learning_rate": optimizer.learning_rate}

    return step


def evaluate_classifier(model: VideoClassifier, dataset: tf.data.Dataset) -> Dict[str, float]:
    """Top-1 / top-5 (percent) with each clip's view (window x crop) probabilities averaged."""

    @tf.function(reduce_retracing=True)
    def probabilities(video):  # (B, W, T, H, W', 3)
        shape = tf.shape(video)
        logits = model(tf.reshape(video, tf.concat([[-1], shape[2:]], 0)), training=False)
        return tf.reshape(tf.nn.softmax(logits), [shape[0], shape[1], -1])  # (B, W, C)

    scores, labels = [], []
    for batch in dataset:
        scores.append(accuracy.average_views(probabilities(batch["video"]).numpy()))
        labels.append(batch["label"].numpy())
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    out = accuracy.topk_accuracy(scores, labels)
    out.update(chance=100.0 / model.num_classes, num_test_clips=int(len(labels)))
    return out
