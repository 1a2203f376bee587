"""The frozen word table: alignment with the vocabulary from word2vec (binary, text) and GloVe
files, word2vec trained on a record set's narrations, the missing words' initialisation, bad
input, and tools/build_word_vectors.py end to end (its --help without TensorFlow)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from gensim.models import KeyedVectors

from vatt_gh.data import synthetic, word_vectors
from vatt_gh.data import text as text_lib
from vatt_gh.models import build_vatt, dummy_inputs, get_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "build_word_vectors.py")
DIM = 4


@pytest.fixture()
def kitchen_vocab(tmp_path):
    path = str(tmp_path / "vocab.txt")
    text_lib.write_word_vocab(path, ["pan", "egg", "whisk", "zebra"])  # ids 2..5
    return path


def user_vectors(tmp_path, fmt):
    """'Pan' capitalised (as GoogleNews has it), 'whisk' and 'egg' lower-case, no 'zebra'."""
    words = {"Pan": [1, 2, 3, 4], "egg": [5, 6, 7, 8], "whisk": [-1, 0, 1, 2], "oil": [9, 9, 9, 9]}
    path = str(tmp_path / f"vectors.{fmt}")
    if fmt == "glove":
        with open(path, "w") as f:
            f.writelines(f"{w} {' '.join(map(str, v))}\n" for w, v in words.items())
    else:
        kv = KeyedVectors(vector_size=DIM)
        kv.add_vectors(list(words), np.array(list(words.values()), np.float32))
        kv.save_word2vec_format(path, binary=fmt == "word2vec_binary")
    return path, words


@pytest.mark.parametrize("fmt", word_vectors.FORMATS)
def test_table_rows_follow_the_vocabulary(tmp_path, kitchen_vocab, fmt):
    path, words = user_vectors(tmp_path, fmt)
    out = str(tmp_path / "table.npy")
    report = word_vectors.build_table(kitchen_vocab, out, rows=10, dim=DIM, vectors_path=path,
                                      vectors_format=fmt)  # fmt: skip
    table = np.load(out)
    assert table.shape == (10, DIM) and table.dtype == np.float32
    np.testing.assert_array_equal(table[0], 0.0)  # <pad>
    np.testing.assert_array_equal(table[2], words["Pan"])  # found Capitalised
    np.testing.assert_array_equal(table[3], words["egg"])
    np.testing.assert_array_equal(table[4], words["whisk"])
    np.testing.assert_array_equal(table[6:], 0.0)  # past the vocabulary
    assert report.found == 3 and report.missing == ["<unk>", "zebra"]
    assert "3 of 5 vocabulary words" in report.summary() and "2 missing" in report.summary()
    # The missing words: seeded draws around the found vectors (mean and std per dimension).
    found = table[[2, 3, 4]]
    assert not np.allclose(table[[1, 5]], 0.0)
    again = str(tmp_path / "again.npy")
    word_vectors.build_table(kitchen_vocab, again, 10, DIM, vectors_path=path, vectors_format=fmt)
    np.testing.assert_array_equal(np.load(again), table)
    rng = np.random.default_rng(0)
    expected = found.mean(0) + found.std(0) * rng.standard_normal((2, DIM), dtype=np.float32)
    np.testing.assert_allclose(table[[1, 5]], expected, rtol=1e-6)


def test_word2vec_on_the_narrations_places_class_words_together(tmp_path):
    """No file: skip-gram word2vec on the synthetic narrations, where each class's words occur
    with the same fillers; deterministic from the seed. Every narration word gets a vector."""
    data = synthetic.write_synthetic(
        str(tmp_path / "syn"), num_clips=64, num_classes=4, misaligned_fraction=0.0, num_shards=1
    )
    out = str(tmp_path / "w2v.npy")
    report = word_vectors.build_table(
        data["vocab_path"], out, rows=200, dim=16, narrations=data["file_pattern"], epochs=5
    )
    vocab = text_lib.read_vocab(data["vocab_path"])
    narration_words = {w for words in word_vectors.narration_words(data["file_pattern"])
                       for w in words}  # fmt: skip
    assert set(report.missing) == {"<unk>"} | (set(vocab[2:]) - narration_words)
    table = np.load(out)
    assert np.all(np.isfinite(table)) and np.abs(table[2 : len(vocab)]).sum(1).min() > 0
    again = str(tmp_path / "again.npy")
    word_vectors.build_table(
        data["vocab_path"], again, rows=200, dim=16, narrations=data["file_pattern"], epochs=5
    )
    np.testing.assert_array_equal(np.load(again), table)


def test_random_table_of_a_data_dir_is_built_once(tmp_path):
    """What synthetic data uses (the demo, bench/reproduce.py): every row of the asked norm,
    the same table from the same seed, another from another seed, written once, no temp left."""
    data_dir = str(tmp_path / "data")
    path = word_vectors.random_table(data_dir, rows=50, dim=8, norm=25.0, seed=3)
    assert path == os.path.join(data_dir, "word_vectors_50x8_norm25_seed3.npy")
    table = np.load(path)
    assert table.shape == (50, 8) and table.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(table.astype(np.float64), axis=1), 25.0, rtol=1e-6)
    # Distinct words get distinct directions (what word2vec of the synthetic narrations lacks).
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    assert np.abs(unit @ unit.T - np.eye(50)).max() < 0.99
    stamp = os.path.getmtime(path)
    assert word_vectors.random_table(data_dir, rows=50, dim=8, norm=25.0, seed=3) == path
    assert os.path.getmtime(path) == stamp
    other = str(tmp_path / "other")
    np.testing.assert_array_equal(
        np.load(word_vectors.random_table(other, rows=50, dim=8, norm=25.0, seed=3)), table
    )
    assert not np.allclose(
        np.load(word_vectors.random_table(other, rows=50, dim=8, norm=25.0, seed=4)), table
    )
    assert [f for f in os.listdir(data_dir) if ".tmp" in f] == []
    with pytest.raises(ValueError, match="norm must be a positive number"):
        word_vectors.random_table(data_dir, rows=50, dim=8, norm=float("nan"))


def test_bad_input_is_named(tmp_path, kitchen_vocab):
    path, _ = user_vectors(tmp_path, "glove")
    out = str(tmp_path / "t.npy")
    with pytest.raises(ValueError, match="dims, not 7"):
        word_vectors.build_table(
            kitchen_vocab, out, 10, 7, vectors_path=path, vectors_format="glove"
        )
    with pytest.raises(ValueError, match="more than the 3 table rows"):
        word_vectors.build_table(
            kitchen_vocab, out, 3, DIM, vectors_path=path, vectors_format="glove"
        )
    with pytest.raises(ValueError, match=f"{path}: cannot be read as word2vec_binary"):
        word_vectors.build_table(kitchen_vocab, out, 10, DIM, vectors_path=path)
    with pytest.raises(ValueError, match="either a vectors file or narrations"):
        word_vectors.build_table(kitchen_vocab, out, 10, DIM)
    nothing = str(tmp_path / "nothing.txt")
    with open(nothing, "w") as f:
        f.write("oil 1 2 3 4\n")
    with pytest.raises(ValueError, match="none of the 5 vocabulary words"):
        word_vectors.build_table(
            kitchen_vocab, out, 10, DIM, vectors_path=nothing, vectors_format="glove"
        )
    assert not os.path.exists(out)


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, TOOL, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_tool_builds_the_table_the_model_loads_frozen(tmp_path, kitchen_vocab):
    path, words = user_vectors(tmp_path, "word2vec_text")
    config = get_config("micro")
    out = str(tmp_path / "table.npy")
    done = run_tool(
        f"--vocab={kitchen_vocab}",
        f"--vectors={path}",
        "--format=word2vec_text",
        f"--output={out}",
        f"--vocab_size={config.vocab_size}",
        f"--dim={DIM}",
    )
    assert done.returncode == 0, done.stderr
    assert "3 of 5 vocabulary words" in done.stdout and "2 missing" in done.stdout
    model = build_vatt("micro", word_dim=DIM, word_vectors_path=out)
    model(dummy_inputs(model.vatt_config))
    table = model.text_tokenizer.word_embedding.embeddings
    np.testing.assert_array_equal(table.numpy()[3], words["egg"])
    assert all(v is not table for v in model.trainable_variables)


def test_tool_help_does_not_import_tensorflow_and_usage_errors_are_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", TOOL, "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=300,
    )
    assert "--narrations" in done.stdout  # (absl exits 1 after --help)
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "absl.flags" in imported
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "gensim")]
    done = run_tool("--vocab=v.txt", f"--output={tmp_path / 'x.npy'}")
    assert done.returncode != 0 and "exactly one of --vectors and --narrations" in done.stderr
    done = run_tool(
        f"--vocab={tmp_path / 'missing.txt'}", f"--vectors={tmp_path / 'v'}", "--output=x.npy"
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("build_word_vectors:")
