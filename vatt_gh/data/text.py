"""Narration tokenisation with tensorflow-text (graph mode, no Python in the input pipeline).

Two vocabularies, both plain text files with one token per line (line number = id):
- 'word' (VATT's default): line 0 is the pad token `<pad>` (id 0), `<unk>` is the OOV id. Text is
  case-folded, punctuation is split off as separate tokens, then whitespace-split and looked up.
- 'wordpiece' (option): a BERT vocabulary with `[PAD]` on line 0 and `[UNK]`; case-folded text goes
  through `tensorflow_text.FastWordpieceTokenizer` (which splits whitespace and punctuation).
Token ids are truncated / padded with 0 to `max_tokens`.
"""

from typing import List

import tensorflow as tf
import tensorflow_text as tf_text

PAD_ID = 0
WORD_PAD, WORD_UNK = "<pad>", "<unk>"
WORDPIECE_PAD, WORDPIECE_UNK = "[PAD]", "[UNK]"
# Punctuation is split off so "pan." and "pan" share a token (same rule in build_vocab).
_PUNCT = r"([[:punct:]])"


def normalize(text: tf.Tensor) -> tf.Tensor:
    """Case-folds (lower-cases, NFKC) and surrounds punctuation with spaces."""
    return tf.strings.regex_replace(tf_text.case_fold_utf8(text), _PUNCT, r" \1 ")


def split_words(text: tf.Tensor) -> tf.RaggedTensor:
    """string (N,) -> ragged words (N, None), the word vocabulary's units."""
    return tf_text.WhitespaceTokenizer().tokenize(normalize(text))


def read_vocab(path: str) -> List[str]:
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line in f]


class Tokenizer(tf.Module):
    """string (N,) -> int32 (N, max_tokens) ids, 0 = pad."""

    def __init__(self, vocab_path: str, kind: str = "word", max_tokens: int = 16):
        super().__init__(name="narration_tokenizer")
        if kind not in ("word", "wordpiece"):
            raise ValueError(f"tokenizer kind must be 'word' or 'wordpiece', got {kind!r}")
        vocab = read_vocab(vocab_path)
        pad, unk = (WORD_PAD, WORD_UNK) if kind == "word" else (WORDPIECE_PAD, WORDPIECE_UNK)
        if not vocab or vocab[0] != pad:
            raise ValueError(f"{vocab_path}: line 0 must be the pad token {pad!r} (pad id 0)")
        if unk not in vocab:
            raise ValueError(f"{vocab_path}: the vocabulary has no OOV token {unk!r}")
        self.kind = kind
        self.max_tokens = max_tokens
        self.vocab_size = len(vocab)
        self.unk_id = vocab.index(unk)
        if kind == "word":
            self._table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64)
                ),
                default_value=self.unk_id,
            )
        else:
            self._wordpiece = tf_text.FastWordpieceTokenizer(
                vocab=vocab,
                token_out_type=tf.int64,
                unknown_token=unk,
                no_pretokenization=False,
                support_detokenization=False,
            )

    def __call__(self, text: tf.Tensor) -> tf.Tensor:
        text = tf.convert_to_tensor(text, tf.string)
        if self.kind == "word":
            ids = self._table.lookup(split_words(text))  # ragged (N, None)
        else:
            ids = self._wordpiece.tokenize(tf_text.case_fold_utf8(text))  # ragged (N, None)
        ids = ids.to_tensor(default_value=PAD_ID, shape=[None, self.max_tokens])
        return tf.cast(ids, tf.int32)


def write_word_vocab(path: str, words) -> None:
    """Writes a word vocabulary: <pad>, <unk>, then `words` (most frequent first)."""
    tokens = [WORD_PAD, WORD_UNK] + [w for w in words if w not in (WORD_PAD, WORD_UNK)]
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(t + "\n" for t in tokens))
