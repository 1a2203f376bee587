"""Word vectors aligned with the narration vocabulary: the model's frozen (vocab_size, dim) table.

VATT embeds words with a frozen, pretrained word2vec table. `build_table` makes that table as a
float32 .npy whose row i is the vector of vocabulary line i (`vatt_gh/data/text.py`), from
either
- a user's vectors file: word2vec binary (`.bin`), word2vec text (a "count dim" header line,
  then "word v_1 ... v_dim"), or GloVe text (no header); read with gensim, never fetched; or
- no file: word2vec (gensim, skip-gram) trained on the dataset's own narrations, split into
  words exactly as the tokenizer splits them (case-folded, punctuation apart).

Synthetic data (the demo, bench/reproduce.py) uses `random_table` instead: seeded random vectors
of one norm (its docstring says why not word2vec of the synthetic narrations).

Rows without a vector (the initialisation, reported with a count):
- row 0 (`<pad>`) is zeros; padded positions are never attended to;
- a vocabulary word the vectors do not have (looked up as written, then Capitalised and
  UPPER-cased, since our vocabulary is case-folded and e.g. GoogleNews word2vec is not), and
  `<unk>`, get a seeded normal draw with the mean and standard deviation of the found vectors
  (per dimension), so they sit among the real vectors instead of at the origin;
- rows past the vocabulary's length (the model's table is larger than a small vocabulary) are
  zeros: no token id reaches them.
"""

import dataclasses
import os
import tempfile
import uuid
import zlib
from typing import Dict, Iterable, Iterator, List, Optional

import numpy as np
import tensorflow as tf
from gensim.models import KeyedVectors, Word2Vec

from vatt_gh.data import schema
from vatt_gh.data import text as text_lib
from vatt_gh.data.read import list_files

FORMATS = ("word2vec_binary", "word2vec_text", "glove")


@dataclasses.dataclass
class TableReport:
    """What `build_table` did: how many vocabulary words got a vector, which did not."""

    rows: int  # rows of the table (the model's vocab_size)
    vocab_words: int  # vocabulary lines, <pad> and <unk> included
    found: int  # vocabulary words with a vector
    missing: List[str]  # vocabulary words without one (randomly initialised), <unk> included
    source: str  # the vectors file, or 'word2vec on <pattern>'

    def summary(self) -> str:
        shown = ", ".join(self.missing[:10]) + (" ..." if len(self.missing) > 10 else "")
        return (
            f"{self.found} of {self.vocab_words - 1} vocabulary words found in {self.source}; "
            f"{len(self.missing)} missing (seeded normal draws with the found vectors' mean and "
            f"std): {shown or 'none'}; <pad> and {self.rows - self.vocab_words} unused rows "
            f"past the vocabulary are zeros"
        )


def narration_words(file_pattern: str) -> Iterator[List[str]]:
    """Every narration of a record set as the tokenizer's words (case-folded, punctuation apart)."""
    files = list_files(file_pattern)
    context = {schema.CAPTION: tf.io.VarLenFeature(tf.string)}
    captions = (
        tf.data.TFRecordDataset(files)
        .map(
            lambda r: (
                tf.io.parse_single_sequence_example(r, context_features=context)[0][
                    schema.CAPTION
                ].values
            )
        )
        .unbatch()
        .batch(1024)
        .map(text_lib.split_words)
    )
    for batch in captions:
        for words in batch.to_list():
            if words:
                yield [w.decode("utf-8") for w in words]


def _stable_hash(text: str) -> int:
    """gensim seeds each initial vector from hash(word + seed): use a hash that does not change
    from process to process (Python's str hash does), so training is reproducible."""
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(
    sentences: Iterable[List[str]], dim: int, seed: int = 0, epochs: int = 20, window: int = 5
) -> Dict[str, np.ndarray]:
    """Skip-gram word2vec (gensim, one worker: deterministic) on tokenised sentences."""
    sentences = list(sentences)
    if not sentences:
        raise ValueError("no narrations to train word2vec on")
    model = Word2Vec(
        sentences=sentences,
        vector_size=dim,
        window=window,
        min_count=1,
        sg=1,
        workers=1,
        seed=seed,
        epochs=epochs,
        hashfxn=_stable_hash,
    )
    return {w: model.wv[w] for w in model.wv.index_to_key}


def read_vectors(path: str, fmt: str):
    """A user's word2vec / GloVe file as gensim KeyedVectors (word -> vector)."""
    if fmt not in FORMATS:
        raise ValueError(f"vectors format must be one of {FORMATS}, got {fmt!r}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = path
            if "://" in path:  # gensim reads local files: copy gs:// and the like first
                local = os.path.join(tmp, os.path.basename(path))
                tf.io.gfile.copy(path, local)
            return KeyedVectors.load_word2vec_format(
                local,
                binary=fmt == "word2vec_binary",
                no_header=fmt == "glove",
                unicode_errors="ignore",
            )
    except (OSError, ValueError, EOFError, UnicodeDecodeError, tf.errors.OpError) as e:
        raise ValueError(f"{path}: cannot be read as {fmt} vectors: {e}") from None


def _lookup(vectors, word: str) -> Optional[np.ndarray]:
    for form in (word, word.capitalize(), word.upper()):
        if form in vectors:
            return np.asarray(vectors[form], np.float32)
    return None


def align(vocab: List[str], vectors, rows: int, dim: int, seed: int = 0, source: str = ""):
    """(table (rows, dim) float32, TableReport) for `vocab` from a word -> vector mapping."""
    if len(vocab) > rows:
        raise ValueError(f"the vocabulary has {len(vocab)} words, more than the {rows} table rows")
    table = np.zeros((rows, dim), np.float32)
    missing = []
    for i, word in enumerate(vocab[1:], start=1):  # row 0 is <pad>: zeros
        vector = None if word == text_lib.WORD_UNK else _lookup(vectors, word)
        if vector is None:
            missing.append(i)
            continue
        if vector.shape != (dim,) or not np.all(np.isfinite(vector)):
            raise ValueError(
                f"{source}: the vector of {word!r} has shape {vector.shape} or non-finite "
                f"values; expected {dim} finite numbers"
            )
        table[i] = vector
    missing_set = set(missing)
    found = [i for i in range(1, len(vocab)) if i not in missing_set]
    if not found:
        raise ValueError(f"{source}: none of the {len(vocab) - 1} vocabulary words has a vector")
    mean, std = table[found].mean(0), table[found].std(0)
    rng = np.random.default_rng(seed)
    table[missing] = mean + std * rng.standard_normal((len(missing), dim), dtype=np.float32)
    report = TableReport(rows, len(vocab), len(found), [vocab[i] for i in missing], source)
    return table, report


def build_table(
    vocab_path: str,
    output: str,
    rows: int,
    dim: int,
    vectors_path: Optional[str] = None,
    vectors_format: str = "word2vec_binary",
    narrations: Optional[str] = None,
    seed: int = 0,
    epochs: int = 20,
) -> TableReport:
    """Writes the (rows, dim) table aligned with `vocab_path` to `output` (.npy); see the module
    docstring. Exactly one of `vectors_path` (a user's file) and `narrations` (a record set's
    file pattern to train word2vec on) is given."""
    if (vectors_path is None) == (narrations is None):
        raise ValueError("give either a vectors file or narrations to train word2vec on")
    try:
        vocab = text_lib.read_vocab(vocab_path)
    except tf.errors.OpError as e:
        raise ValueError(f"{vocab_path}: cannot be read: {e.message}") from None
    if not vocab or vocab[0] != text_lib.WORD_PAD:
        raise ValueError(f"{vocab_path}: not a word vocabulary (line 0 must be '<pad>')")
    if vectors_path is not None:
        vectors, source = read_vectors(vectors_path, vectors_format), vectors_path
        if vectors.vector_size != dim:
            raise ValueError(f"{vectors_path}: vectors have {vectors.vector_size} dims, not {dim}")
    else:
        vectors = train_word2vec(narration_words(narrations), dim, seed=seed, epochs=epochs)
        source = f"word2vec trained on {narrations}"
    table, report = align(vocab, vectors, rows, dim, seed=seed, source=source)
    _write_atomically(output, table)
    return report


def _write_atomically(output: str, table: np.ndarray) -> None:
    tmp = f"{output}.tmp-{os.getpid()}-{uuid.uuid4().hex}"  # concurrent writers: own temp
    with tf.io.gfile.GFile(tmp, "wb") as f:
        np.save(f, table)
    tf.io.gfile.rename(tmp, output, overwrite=True)


def random_table(data_dir: str, rows: int, dim: int, norm: float, seed: int = 0) -> str:
    """A seeded random (rows, dim) table, every row of norm `norm`, for synthetic data: built
    once as `data_dir/word_vectors_<rows>x<dim>_norm<norm>_seed<seed>.npy` and reused (workers
    building it at once write the same file). Returns its path.

    Why not word2vec of the synthetic narrations: they are filler words around one class word,
    so every class word has the same contexts and word2vec gives them nearly the same vector
    (pairwise cosine ~0.8 measured on the demo set): the narrations would tell the model nothing.
    Why the norm: VATT adds a LayerNorm'd positional table (unit scale per channel) to the
    projected word vectors; at word2vec's norms (~2.5) the words are a few percent of each text
    token, which 500k steps overcome and a demo's few hundred do not (loss_vt stays at chance).
    """
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"word vector norm must be a positive number, got {norm!r}")
    output = os.path.join(data_dir, f"word_vectors_{rows}x{dim}_norm{norm:g}_seed{seed}.npy")
    if not tf.io.gfile.exists(output):
        table = np.random.default_rng(seed).standard_normal((rows, dim))
        table *= norm / np.linalg.norm(table, axis=1, keepdims=True)
        tf.io.gfile.makedirs(data_dir)
        _write_atomically(output, table.astype(np.float32))
    return output
