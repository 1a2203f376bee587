"""Data: TFRecord triplet schema, narration tokenizer, tf.data pipelines, synthetic triplets.

schema     feature keys, `make_sequence_example` (writer) and `parse_sequence_example` (parser)
text       tensorflow-text tokenizer (word vocabulary with pad 0 / WordPiece option)
augment    clip windows, crops, flips, colour jitter, audio windows (stateless random ops)
pipeline   `pretrain_dataset`, `make_pretrain_input_fn`, `eval_dataset`, configs, `DataErrors`
synthetic  `write_synthetic`: class-driven triplets with known misalignment
video_io   PyAV decoding (whole videos, segments, audio files) for the builders, an .mp4 writer
builder    one video -> its clips' records (`video_records`); `build_dataset` runs it on Beam
beam_build tasks -> TFRecord shards as an Apache Beam pipeline (resumable, failures named)
benchmarks the six Table 1 benchmarks' published layouts -> tasks and official splits / folds
benchmark_build  tasks -> records once per file, shards, index.json (tools/build_benchmark.py)
"""
