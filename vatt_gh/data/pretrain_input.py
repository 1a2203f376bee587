"""Pre-training input: each source's clips from the saved position, mixed by weight, batched.

    ds = pretrain_dataset(config, batch_size=8)                          # one device
    strategy.distribute_datasets_from_function(make_pretrain_input_fn(config, 64, errors,
                                                                       position_fn, counts))
    advance_position(config, position, examples=640)                     # at every checkpoint

Batches (no string tensors):
  'video' float32 (B, T, H, W, 3) in [-1, 1]     'audio' float32 (B, S), S = T*stride/fps*48000
  'text' int32 (B, K, L), pad 0                   'audio_mask' float32 (B,)
  'text_mask' float32 (B, K)                      'label' int32 (B,) first label or -1
  'aligned_va', 'aligned_vt' float32 (B,) synthetic ground truth (1 for real data)
Input pipeline `pipeline_id` of `num_pipelines` reads the shards files[pipeline_id::num_pipelines]
of every source; its sources' seeds differ per source and per pipeline.
"""

from typing import Callable, List, Optional, Tuple

import tensorflow as tf

from vatt_gh.data import text as text_lib
from vatt_gh.data.clips import finished, source_clips
from vatt_gh.data.configs import PretrainConfig, SourceConfig, source_specs
from vatt_gh.data.position import (
    InputPosition,
    SourcePosition,
    advance_source,
    mixture,
    mixture_counts,
    source_seed,
)
from vatt_gh.data.read import ShardCounts, list_files
from vatt_gh.data.rejects import DataErrors

AUTOTUNE = tf.data.AUTOTUNE


def _pipeline_files(source: SourceConfig, pipeline_id: int, num_pipelines: int) -> List[str]:
    """The shards input pipeline `pipeline_id` reads: files[pipeline_id::num_pipelines]."""
    files = list_files(source.file_pattern)
    if num_pipelines > 1:
        if len(files) < num_pipelines:
            raise ValueError(
                f"source {source.name or source.file_pattern!r} has {len(files)} "
                f"shard(s) for {num_pipelines} input pipelines: write more shards"
            )
        files = files[pipeline_id::num_pipelines]
    return files


def _source_seeds(config: PretrainConfig, pipeline_id: int) -> List[Tuple[int, int]]:
    """(base, source index) per source: distinct per source and per input pipeline."""
    return [(config.seed * 1000003 + pipeline_id, i) for i in range(len(config.sources))]


def _start(config: PretrainConfig, position: Optional[InputPosition]) -> InputPosition:
    if position is None:
        return InputPosition(0, tuple(SourcePosition() for _ in config.sources))
    if len(position.sources) != len(config.sources):
        raise ValueError(
            f"the saved input position has {len(position.sources)} source(s), the config "
            f"{len(config.sources)}: resume with the data config the run started with"
        )
    return position


def advance_position(
    config: PretrainConfig,
    position: Optional[InputPosition],
    examples: int,
    pipeline_id: int = 0,
    num_pipelines: int = 1,
    counts: Optional[ShardCounts] = None,
) -> InputPosition:
    """The position of input pipeline `pipeline_id` after `examples` more examples.

    Arithmetic over the shards' record counts (`counts`: those the pipeline learnt while
    reading, or counted here), no decoding: cheap to call at every checkpoint.
    """
    position = _start(config, position)
    counts = counts if counts is not None else ShardCounts()
    if len(config.sources) == 1:
        per_source = [examples]
    else:
        weights = [float(s.weight) for s in config.sources]
        per_source = mixture_counts(weights, config.seed, position.examples, examples)
    sources = []
    for i, (source, seed) in enumerate(zip(config.sources, _source_seeds(config, pipeline_id))):
        sources.append(
            advance_source(
                position.sources[i],
                per_source[i],
                _pipeline_files(source, pipeline_id, num_pipelines),
                config.cycle_length,
                config.shuffle_buffer,
                source_seed(seed),
                counts,
            )
        )
    return InputPosition(position.examples + examples, tuple(sources))


def pretrain_examples(
    config: PretrainConfig,
    errors: DataErrors,
    pipeline_id: int = 0,
    num_pipelines: int = 1,
    position: Optional[InputPosition] = None,
    counts: Optional[ShardCounts] = None,
) -> tf.data.Dataset:
    """Unbatched pre-training examples from `position` on, sources mixed i.i.d. by weight."""
    specs = source_specs(config)
    position = _start(config, position)
    counts = counts if counts is not None else ShardCounts()
    tokenizer = text_lib.Tokenizer(config.vocab_path, config.tokenizer, config.max_tokens)
    color = (
        config.flip,
        config.brightness,
        config.contrast,
        config.saturation,
        config.hue,
        config.color_prob,
    )
    datasets = []
    seeds = _source_seeds(config, pipeline_id)  # distinct per source and host
    for i, (source, spec) in enumerate(zip(config.sources, specs)):
        ds = source_clips(
            _pipeline_files(source, pipeline_id, num_pipelines),
            spec,
            errors,
            cycle_length=config.cycle_length,
            shuffle_buffer=config.shuffle_buffer,
            repeat=config.repeat,
            seed=seeds[i],
            start=position.sources[i],
            counts=counts,
            source=f"source {source.name or source.file_pattern!r}",
            max_bad_in_a_row=config.max_bad_in_a_row,
        )
        datasets.append(
            finished(
                ds, spec, tokenizer, config.num_captions, color, audio_noise=config.audio_noise
            )
        )
    if len(datasets) == 1:
        return datasets[0]
    weights = [float(s.weight) for s in config.sources]
    total = sum(weights)
    return mixture(datasets, [w / total for w in weights], config.seed, position.examples)


def pretrain_dataset(
    config: PretrainConfig,
    batch_size: int,
    errors: Optional[DataErrors] = None,
    position: Optional[InputPosition] = None,
    counts: Optional[ShardCounts] = None,
) -> tf.data.Dataset:
    """Pre-training batches for one device from `position` on (see the module docstring)."""
    errors = errors if errors is not None else DataErrors(config.on_error)
    ds = pretrain_examples(config, errors, position=position, counts=counts)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def make_pretrain_input_fn(
    config: PretrainConfig,
    global_batch_size: int,
    errors: Optional[DataErrors] = None,
    position_fn: Optional[Callable[[int, int], Optional[InputPosition]]] = None,
    counts: Optional[ShardCounts] = None,
):
    """input_fn(input_context) for `strategy.distribute_datasets_from_function`.

    Each input pipeline (host) reads the shards `files[pipeline_id::num_pipelines]` from
    `position_fn(pipeline_id, num_pipelines)` (default: the start) and batches
    `input_context.get_per_replica_batch_size(global_batch_size)` examples.
    """
    errors = errors if errors is not None else DataErrors(config.on_error)
    position_fn = position_fn or (lambda pid, num: None)

    def input_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = input_context.get_per_replica_batch_size(global_batch_size)
        pid = input_context.input_pipeline_id
        ds = pretrain_examples(
            config,
            errors,
            pid,
            input_context.num_input_pipelines,
            position_fn(pid, input_context.num_input_pipelines),
            counts,
        )
        return ds.batch(batch, drop_remainder=True).prefetch(AUTOTUNE)

    return input_fn
