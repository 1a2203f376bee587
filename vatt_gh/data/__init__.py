"""Data: TFRecord triplet schema, tf.data input (one module per phase), synthetic triplets, builders.

schema          feature keys, `make_sequence_example` (writer) and `parse_sequence_example` (parser)
text            tensorflow-text tokenizer (word vocabulary with pad 0 / WordPiece option)
augment         clip windows, crops, flips, colour jitter, audio windows (stateless random ops)
fields          `check_fields`: a config field's range, one line naming the field at fault
rejects         reason codes, `DataErrors` (raise, or skip and count), BadRecordError
configs         `SourceConfig`, `PretrainConfig`, `EvalConfig` (gin), `ClipSpec`
position        `InputPosition`: a source's stream order, advanced by arithmetic; the mixture
read            `list_files`, `ShardCounts`, `read_records`: the one shard reader
decode          parse, validate, decode one record's window(s); explain a rejection
clips           one source's clips: read -> shuffle blocks -> decode -> check -> finish
pretrain_input  `pretrain_dataset`, `make_pretrain_input_fn`, `advance_position`
eval_input      `eval_dataset`: the same reader at position 0, unshuffled
synthetic       `write_synthetic`: class-driven triplets with known misalignment
video_io        PyAV decoding (whole videos, segments, audio files) for the builders, an .mp4 writer
builder         one video -> its clips' records (`video_records`); `build_dataset` runs it on Beam
beam_build      tasks -> TFRecord shards as an Apache Beam pipeline (resumable, failures named)
benchmarks      the six Table 1 benchmarks' published layouts -> tasks and official splits / folds
benchmark_build tasks -> records once per file, shards, index.json (tools/build_benchmark.py)
captions        WebVTT / SRT captions; vocab, word_vectors: the text tower's vocabulary and table
"""
