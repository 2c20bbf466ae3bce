"""Corpus reading, the fixed split, and the tokenizer interface."""

import pytest

from eventllm.data import read_texts, split_text, strip_gutenberg
from eventllm.errors import CheckpointError, DataError
from eventllm.tokenizer import ByteTokenizer, HFTokenizer, RWKVWorldTokenizer, load_tokenizer


def test_gutenberg_boilerplate_is_stripped():
    raw = "licence header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nChapter 1\n\nText.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nfooter"
    assert strip_gutenberg(raw) == "Chapter 1\n\nText.\n"


def test_splits_are_disjoint_and_cover_the_book():
    book = "".join(f"Paragraph {i} " + "word " * 20 + "\n\n" for i in range(200))
    parts = [split_text(book, s) for s in ("train", "valid", "test")]
    assert "".join(parts) == book
    assert all(parts) and len(parts[0]) > 8 * len(parts[1])
    assert all(p.endswith("\n\n") for p in parts)  # cuts fall on paragraph boundaries


def test_shared_corpus_split_sizes(data_dir):
    valid = read_texts(data_dir / "gutenberg", "valid")
    train = read_texts(data_dir / "gutenberg", "train")
    assert len(valid) == len(train) == 4
    for v, t in zip(valid, train):
        assert v not in t and 0.04 < len(v) / len(t) < 0.07


def test_empty_or_missing_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read_texts(tmp_path / "none")
    with pytest.raises(DataError, match="holds no .txt files"):
        read_texts(tmp_path)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="no text"):
        read_texts(tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        split_text("abc", "dev")


def test_tokenizers_round_trip():
    from eventllm.models.registry import ZOO_DIR

    text = "It was a bright cold day in April — naïve café."
    for tok in (HFTokenizer(ZOO_DIR / "tokenizer.json"), RWKVWorldTokenizer(), ByteTokenizer()):
        assert tok.decode(tok.encode(text)) == text
    assert RWKVWorldTokenizer().vocab_size == 65536


def test_tokenizer_lookup_by_vocabulary(tmp_path):
    assert isinstance(load_tokenizer(tmp_path, 65536), RWKVWorldTokenizer)
    assert isinstance(load_tokenizer(tmp_path, 256), ByteTokenizer)
    with pytest.raises(CheckpointError, match="no tokenizer.json beside the model"):
        load_tokenizer(tmp_path, 1000)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not a readable tokenizer.json"):
        load_tokenizer(tmp_path, 1000)
