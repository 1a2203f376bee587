"""Fine-tuning a pre-trained video backbone on the pre-training loop (paper Table 1).

    configs.parse_run(model_dir)   # gin: the pre-training run's, then the user's
    metrics = finetune(model_dir, output_dir, train_pattern, test_pattern, num_classes, strategy)

The recipe, the classifier and its train step are vatt_gh/evaluation/classifier.py; the run is
`loop.train`, the loop of pre-training: exact resume after a kill (checkpoint, random generators
and the input position), SIGTERM pre-emption (exit code 42), the unreadable-checkpoint fallback,
host-side summaries, rejected-record totals, progress lines. After training the test clips are
scored (top-1 / top-5, `eval_windows` windows x `eval_crops` crops per clip averaged) into
<output_dir>/metrics-<step>.json and TensorBoard scalars under <output_dir>/eval.
"""

import dataclasses
import os
from typing import Dict, Optional

import tensorflow as tf
from absl import logging

from vatt_gh import cluster, configs, console, loop, provision, run_lock
from vatt_gh.data import text as text_lib
from vatt_gh.data.configs import EvalConfig, PretrainConfig, SourceConfig, check_num_crops
from vatt_gh.data.eval_input import eval_dataset
from vatt_gh.errors import ConfigError
from vatt_gh.evaluation import features, results
from vatt_gh.evaluation.classifier import (
    FinetuneConfig,
    VideoClassifier,
    evaluate_classifier,
    finetune_optimizer,
    make_train_step,
)
from vatt_gh.models import dummy_inputs


def train_data(train_pattern: str, vocab_path: str, seed: int) -> PretrainConfig:
    """The run's pre-training input (sizes, augmentation) over the labelled training records."""
    base = PretrainConfig()
    source = (
        dataclasses.replace(
            base.sources[0], file_pattern=train_pattern, weight=1.0, name="finetune"
        )
        if base.sources
        else SourceConfig(file_pattern=train_pattern, name="finetune")
    )
    # Records with their own frame rate: bind EvalConfig.fps / EvalConfig.stride for both.
    eval_base = EvalConfig()
    source = dataclasses.replace(source, fps=eval_base.fps, stride=eval_base.stride)
    return dataclasses.replace(
        base,
        sources=(source,),
        vocab_path=vocab_path,
        num_captions=1,
        seed=seed,
        repeat=True,
        audio_seconds=None,
    )


def finetune_line(step: int, train_steps: int, values: dict) -> str:
    """Fine-tuning's line per summary: the step, the loss, the learning rate and the rate over
    the last window."""
    width = len(str(train_steps))
    return (
        f"fine-tune step {step:>{width}}/{train_steps}  loss {values['loss']:.4f}  "
        f"lr {values['learning_rate']:.1e}  "
        f"{1.0 / max(values['seconds_per_step'], 1e-9):.1f} steps/s"
    )


def finetune(
    model_dir: str,
    output_dir: str,
    train_pattern: str,
    test_pattern: str,
    num_classes: int,
    strategy: tf.distribute.Strategy,
    checkpoint: Optional[str] = None,
    config: Optional[FinetuneConfig] = None,
    allow_low_learning_rate: bool = False,
) -> Dict[str, float]:
    """Fine-tunes the backbone of pre-training run `model_dir` (its `checkpoint`, default the
    newest) with a linear classifier; returns the test metrics (with `step` and `start_step`).
    Gin must hold the run's config (configs.parse_run). Resumes from <output_dir>/checkpoints;
    a run already at FinetuneConfig.train_steps is only scored. A schedule that keeps the
    learning rate near zero for the whole run (warm-up longer than train_steps) is a
    ConfigError unless `allow_low_learning_rate`."""
    config = config or FinetuneConfig()
    _check(config, strategy, allow_low_learning_rate)
    provision.check_writable(output_dir)
    chief = cluster.is_chief(strategy)
    with run_lock.hold(output_dir, chief):  # one run per directory
        console.exit_on_sigterm(run_lock.release_held)  # until training's handler
        vocab = _empty_vocab(output_dir, strategy, chief)
        loop.seed_everything(config.seed)  # before the model: its dropout generators are saved
        model, optimizer = _classifier(model_dir, checkpoint, num_classes, config, strategy)
        trained = loop.train(
            output_dir,
            strategy,
            model,
            optimizer,
            make_train_step(model, optimizer, config, strategy),
            train_data(train_pattern, vocab, config.seed),
            config.global_batch_size,
            loop.LoopConfig(
                train_steps=config.train_steps,
                checkpoint_every=config.checkpoint_every,
                summary_every=config.summary_every,
                keep_checkpoints=config.keep_checkpoints,
                line=finetune_line,
            ),
        )
        eval_config = features.eval_config_for_run(
            test_pattern, vocab, num_windows=config.eval_windows, num_crops=config.eval_crops
        )
        metrics = evaluate_classifier(model, eval_dataset(eval_config, config.eval_batch_size))
        metrics.update(step=trained.step, start_step=trained.start)
        if chief:
            _write_metrics(output_dir, metrics)
        return metrics


def _check(config: FinetuneConfig, strategy, allow_low_learning_rate: bool):
    """The schedule leaves the learning rate near zero throughout (unless allowed), or the batch
    does not split over the replicas: a ConfigError before anything is built."""
    provision.check_learning_rate(
        finetune_optimizer(config),  # a throwaway: only its schedule is read
        config.train_steps,
        "FinetuneConfig.train_steps",
        "FinetuneConfig.warmup_steps",
        config.warmup_steps,
        allow_low_learning_rate,
    )
    try:
        check_num_crops(config.eval_crops, "FinetuneConfig.eval_crops")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.global_batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"FinetuneConfig.global_batch_size={config.global_batch_size} "
            f"does not split over {strategy.num_replicas_in_sync} replicas"
        )


def _empty_vocab(output_dir: str, strategy, chief: bool) -> str:
    """An empty word vocabulary in output_dir (text is unused; the input pipeline needs one),
    written by the chief before any worker reads it."""
    vocab = os.path.join(output_dir, "vocab.txt")
    if chief and not tf.io.gfile.exists(vocab):
        text_lib.write_word_vocab(vocab, [])
    if cluster.num_workers(strategy) > 1:
        cluster.chief_barrier("vatt_gh/finetune_vocab", chief)
    return vocab


def _classifier(model_dir: str, checkpoint, num_classes: int, config: FinetuneConfig, strategy):
    """(classifier on the restored backbone of run `model_dir`, its optimizer), built under
    `strategy`; an unreadable run is a ConfigError."""
    with strategy.scope():
        try:
            pretrained, pretrained_step = configs.load_pretrained(
                model_dir, checkpoint, parse_config=False
            )
        except ConfigError:
            raise
        except (ValueError, tf.errors.OpError) as e:
            raise ConfigError(f"cannot restore {model_dir!r}: {e}") from None
        model = VideoClassifier(
            pretrained.vatt, num_classes, config.head_dropout, config.drop_token
        )
        video = dummy_inputs(pretrained.vatt.vatt_config)["video"]
        strategy.run(lambda: model(video, training=False))  # builds the head and its dropout
        optimizer = finetune_optimizer(config)
    logging.info(
        "fine-tuning from %s (pre-training step %d) on %d replica(s)",
        model_dir,
        pretrained_step,
        strategy.num_replicas_in_sync,
    )
    return model, optimizer


def _write_metrics(output_dir: str, metrics: dict):
    """<output_dir>/metrics-<step>.json and TensorBoard scalars eval/finetune/... (chief only)."""
    step = metrics["step"]
    results.write_json(os.path.join(output_dir, f"metrics-{step}.json"), metrics)
    results.write_scalars(
        os.path.join(output_dir, "eval"),
        step,
        {k: v for k, v in metrics.items() if k not in ("step", "start_step")},
        prefix="eval/finetune",
    )
