"""Narration vocabularies built from the captions of a TFRecord set (tools/build_vocab.py).

word_vocab       the most frequent words, split and case-folded as the pipeline's tokenizer does
wordpiece_vocab  tensorflow-text's bert_vocab_from_dataset, `[PAD]` at id 0 and `[UNK]` at id 1
"""

import collections
from typing import List

import tensorflow as tf
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

from vatt_gh.data import schema
from vatt_gh.data import text as text_lib
from vatt_gh.data.read import list_files


def captions_dataset(file_pattern: str) -> tf.data.Dataset:
    """All narrations (string scalars) of a record set."""
    files = list_files(file_pattern)
    context = {schema.CAPTION: tf.io.VarLenFeature(tf.string)}
    ds = tf.data.TFRecordDataset(files).map(
        lambda r: (
            tf.io.parse_single_sequence_example(r, context_features=context)[0][
                schema.CAPTION
            ].values
        )
    )
    return ds.unbatch()


def word_vocab(file_pattern: str, vocab_size: int, min_count: int = 1) -> List[str]:
    """The `vocab_size - 2` most frequent words seen at least `min_count` times (ties:
    alphabetical); `text.write_word_vocab` puts `<pad>` and `<unk>` before them."""
    counts = collections.Counter()
    for words in captions_dataset(file_pattern).batch(1024).map(text_lib.split_words):
        counts.update(w.decode("utf-8") for w in words.flat_values.numpy())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, n in ranked if n >= min_count][: vocab_size - 2]


def wordpiece_vocab(file_pattern: str, vocab_size: int) -> List[str]:
    """A WordPiece vocabulary of the narrations, special tokens first."""
    return bert_vocab_from_dataset.bert_vocab_from_dataset(
        captions_dataset(file_pattern).batch(1024).prefetch(2),
        vocab_size=vocab_size,
        reserved_tokens=[text_lib.WORDPIECE_PAD, text_lib.WORDPIECE_UNK],
        bert_tokenizer_params=dict(lower_case=True),
    )
