r"""Builds a narration vocabulary from the captions of a TFRecord set.

Examples:
  python tools/build_vocab.py --file_pattern='/data/howto/tfrecords/clips-*' \
      --output=/data/howto/vocab.txt --kind=word --vocab_size=65536
  python tools/build_vocab.py --file_pattern='/data/howto/tfrecords/clips-*' \
      --output=/data/howto/wordpiece.txt --kind=wordpiece --vocab_size=30000

'word': the most frequent words (same case folding and punctuation split as the pipeline's
tokenizer), `<pad>` at id 0 and `<unk>` at id 1. 'wordpiece': tensorflow-text's
bert_vocab_from_dataset with `[PAD]` at id 0 and `[UNK]` at id 1.
"""

from absl import app, flags

from vatt_gh import console

console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS
flags.DEFINE_string("file_pattern", None, "Glob pattern(s) of the record set, comma separated.")
flags.DEFINE_string("output", None, "Vocabulary file to write.")
flags.DEFINE_enum("kind", "word", ["word", "wordpiece"], "Vocabulary kind.")
flags.DEFINE_integer("vocab_size", 2**16, "Vocabulary size, special tokens included.")
flags.DEFINE_integer("min_count", 1, "word: drop rarer words.")
flags.mark_flags_as_required(["file_pattern", "output"])


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    # TensorFlow after the flags, so --help and flag errors stay fast.
    import tensorflow as tf

    from vatt_gh.data import text as text_lib
    from vatt_gh.data import vocab

    if FLAGS.kind == "word":
        words = vocab.word_vocab(FLAGS.file_pattern, FLAGS.vocab_size, FLAGS.min_count)
        text_lib.write_word_vocab(FLAGS.output, words)
        size = len(words) + 2
    else:
        tokens = vocab.wordpiece_vocab(FLAGS.file_pattern, FLAGS.vocab_size)
        with tf.io.gfile.GFile(FLAGS.output, "w") as f:
            f.write("".join(t + "\n" for t in tokens))
        size = len(tokens)
    print(f"wrote {size} tokens to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
