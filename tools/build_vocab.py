r"""Builds a narration vocabulary from the captions of a TFRecord set.

Examples:
  .venv/bin/python tools/build_vocab.py --file_pattern='/data/howto/tfrecords/clips-*' \
      --output=/data/howto/vocab.txt --kind=word --vocab_size=65536
  .venv/bin/python tools/build_vocab.py --file_pattern='/data/howto/tfrecords/clips-*' \
      --output=/data/howto/wordpiece.txt --kind=wordpiece --vocab_size=30000

'word': the most frequent words (same case folding and punctuation split as the pipeline's
tokenizer), `<pad>` at id 0 and `<unk>` at id 1. 'wordpiece': tensorflow-text's
bert_vocab_from_dataset with `[PAD]` at id 0 and `[UNK]` at id 1.
"""

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a bare checkout

import tensorflow as tf
from absl import app, flags

from vatt_gh.data import pipeline, schema
from vatt_gh.data import text as text_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("file_pattern", None, "Glob pattern(s) of the record set, comma separated.")
flags.DEFINE_string("output", None, "Vocabulary file to write.")
flags.DEFINE_enum("kind", "word", ["word", "wordpiece"], "Vocabulary kind.")
flags.DEFINE_integer("vocab_size", 2**16, "Vocabulary size, special tokens included.")
flags.DEFINE_integer("min_count", 1, "word: drop rarer words.")
flags.mark_flags_as_required(["file_pattern", "output"])


def captions_dataset(file_pattern: str) -> tf.data.Dataset:
    """All narrations (string scalars) of a record set."""
    files = pipeline.list_files(file_pattern)
    context = {schema.CAPTION: tf.io.VarLenFeature(tf.string)}
    ds = tf.data.TFRecordDataset(files).map(
        lambda r: (
            tf.io.parse_single_sequence_example(r, context_features=context)[0][
                schema.CAPTION
            ].values
        )
    )
    return ds.unbatch()


def word_vocab(file_pattern: str, vocab_size: int, min_count: int = 1):
    counts = collections.Counter()
    for words in captions_dataset(file_pattern).batch(1024).map(text_lib.split_words):
        counts.update(w.decode("utf-8") for w in words.flat_values.numpy())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: alphabetical
    return [w for w, n in ranked if n >= min_count][: vocab_size - 2]


def wordpiece_vocab(file_pattern: str, vocab_size: int):

    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bvd

    reserved = [text_lib.WORDPIECE_PAD, text_lib.WORDPIECE_UNK]
    return bvd.bert_vocab_from_dataset(
        captions_dataset(file_pattern).batch(1024).prefetch(2),
        vocab_size=vocab_size,
        reserved_tokens=reserved,
        bert_tokenizer_params=dict(lower_case=True),
    )


def main(argv):
    del argv
    if FLAGS.kind == "word":
        words = word_vocab(FLAGS.file_pattern, FLAGS.vocab_size, FLAGS.min_count)
        text_lib.write_word_vocab(FLAGS.output, words)
        size = len(words) + 2
    else:
        tokens = wordpiece_vocab(FLAGS.file_pattern, FLAGS.vocab_size)
        with tf.io.gfile.GFile(FLAGS.output, "w") as f:
            f.write("".join(t + "\n" for t in tokens))
        size = len(tokens)
    print(f"wrote {size} tokens to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
