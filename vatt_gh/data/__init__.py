"""Data: TFRecord triplet schema, narration tokenizer, tf.data pipelines, synthetic triplets.

schema     feature keys, `make_sequence_example` (writer) and `parse_sequence_example` (parser)
text       tensorflow-text tokenizer (word vocabulary with pad 0 / WordPiece option)
augment    clip windows, crops, flips, colour jitter, audio windows (stateless random ops)
pipeline   `pretrain_dataset`, `make_pretrain_input_fn`, `eval_dataset`, configs, `DataErrors`
synthetic  `write_synthetic`: class-driven triplets with known misalignment
video_io   PyAV decoding for tools/build_dataset.py (and an .mp4 writer for tests and benchmarks)
builder    one video -> its clips' records (`video_records`); `build_dataset` runs it on Beam
beam_build tasks -> TFRecord shards as an Apache Beam pipeline (resumable, failures named)
"""
