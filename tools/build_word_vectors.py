r"""Builds the model's frozen word table (.npy, vocab_size x dim) aligned with a word vocabulary.

From a word2vec / GloVe file you bring (nothing is downloaded):
  .venv/bin/python tools/build_word_vectors.py --vocab=/data/howto/vocab.txt \
      --vectors=/data/GoogleNews-vectors-negative300.bin --format=word2vec_binary \
      --output=/data/howto/word_vectors.npy
Without one, word2vec (gensim, skip-gram) is trained on the dataset's own narrations:
  .venv/bin/python tools/build_word_vectors.py --vocab=/data/howto/vocab.txt \
      --narrations='/data/howto/tfrecords/clips-*' --output=/data/howto/word_vectors.npy
Then point the model at it: `build_vatt.word_vectors_path = '/data/howto/word_vectors.npy'`.

Row i is the vector of vocabulary line i; <pad> and the rows past the vocabulary are zeros;
vocabulary words without a vector (reported with a count) get seeded normal draws with the
found vectors' mean and std (vatt_gh/data/word_vectors.py).
"""

import sys

from absl import app, flags

from vatt_gh import console

FLAGS = flags.FLAGS
flags.DEFINE_string("vocab", None, "Word vocabulary (tools/build_vocab.py --kind=word).")
flags.DEFINE_string("output", None, "The .npy table to write.")
flags.DEFINE_string("vectors", None, "A word2vec / GloVe file; omit to train on --narrations.")
flags.DEFINE_enum(
    "format",
    "word2vec_binary",
    ["word2vec_binary", "word2vec_text", "glove"],
    "Format of --vectors: word2vec .bin, word2vec text (with header), GloVe text (no header).",
)
flags.DEFINE_string("narrations", None, "Record set (glob, comma separated) to train word2vec on.")
flags.DEFINE_integer("vocab_size", 2**16, "Table rows: the model's vocab_size.")
flags.DEFINE_integer("dim", 300, "Vector width: the model's word_dim.")
flags.DEFINE_integer("epochs", 20, "word2vec training epochs (with --narrations).")
flags.DEFINE_integer("seed", 0, "Seed of word2vec and of the missing words' initialisation.")
flags.mark_flags_as_required(["vocab", "output"])
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose (gensim's progress), listed by --help


def main(argv):
    del argv
    if (FLAGS.vectors is None) == (FLAGS.narrations is None):
        raise app.UsageError("give exactly one of --vectors and --narrations")
    console.quiet(FLAGS.verbose)  # gensim's INFO lines and TensorFlow's log only with --verbose
    # TensorFlow and gensim load here, after the flags: `--help` and usage errors stay instant.
    from vatt_gh.data import word_vectors

    try:
        report = word_vectors.build_table(
            FLAGS.vocab,
            FLAGS.output,
            FLAGS.vocab_size,
            FLAGS.dim,
            vectors_path=FLAGS.vectors,
            vectors_format=FLAGS.format,
            narrations=FLAGS.narrations,
            seed=FLAGS.seed,
            epochs=FLAGS.epochs,
        )
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"build_word_vectors: {e}")
    print(report.summary())
    print(f"wrote {FLAGS.output} ({FLAGS.vocab_size} x {FLAGS.dim} float32)")


if __name__ == "__main__":
    app.run(main)
