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
    with pytest.raises(DataError, match="holds no .txt, .txt.xz or .txt.gz files"):
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


# --- compressed text, split-file folders, token caches, bits per byte ---------------------------------------

def _book(data_dir):
    return (data_dir / "gutenberg" / "moby_dick.txt").read_bytes()


def test_xz_and_gz_give_exactly_the_token_stream_of_the_plain_file(data_dir, tmp_path):
    import gzip
    import lzma

    from eventllm.data import cached_token_stream, read_texts, token_stream
    from eventllm.models.registry import ZOO_DIR

    tok = HFTokenizer(ZOO_DIR / "rwkv4-small" / "tokenizer.json")
    raw = _book(data_dir)
    for folder in ("plain", "xz", "gz"):
        (tmp_path / folder).mkdir()
    (tmp_path / "plain" / "test.txt").write_bytes(raw)
    (tmp_path / "xz" / "test.txt.xz").write_bytes(lzma.compress(raw))
    (tmp_path / "gz" / "test.txt.gz").write_bytes(gzip.compress(raw))
    reference = token_stream([raw.decode("utf-8")], tok)  # the whole decompressed text in one encode call
    for folder in ("plain", "xz", "gz"):
        assert read_texts(tmp_path / folder, "test") == [raw.decode("utf-8")]
        streamed = cached_token_stream(tmp_path / folder, "test", tok, cache_dir=tmp_path / "cache", progress=False)
        assert streamed.dtype.name == "uint16" and streamed.tolist() == reference.tolist(), folder
    # the second call reads the cache file instead of tokenising
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_chunks_are_cut_where_byte_level_bpe_tokens_do_not_change(data_dir):
    import io

    from eventllm.data import iter_chunks
    from eventllm.models.registry import ZOO_DIR

    tok = HFTokenizer(ZOO_DIR / "rwkv4-small" / "tokenizer.json")
    text = _book(data_dir).decode("utf-8") + "\n\n\n\n  Indented.\n\n\nX\n \n\nY"
    pieces = list(iter_chunks(io.StringIO(text), size=20_000))
    assert len(pieces) > 20 and "".join(pieces) == text
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)


def test_a_folder_of_split_files_uses_them_as_the_splits(tmp_path):
    from eventllm.data import read_texts

    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(f"The {split} book.\n\nIts last line.\n")
    assert read_texts(tmp_path, "valid") == ["The valid book.\n\nIts last line.\n"]
    assert len(read_texts(tmp_path, "all")) == 3
    (tmp_path / "test.txt").unlink()
    with pytest.raises(DataError, match="no test.txt"):
        read_texts(tmp_path, "test")


def test_a_damaged_xz_file_is_one_clear_error(data_dir, tmp_path):
    import lzma

    from eventllm.data import read_texts

    packed = lzma.compress(_book(data_dir))
    (tmp_path / "train.txt.xz").write_bytes(packed[: len(packed) // 2])  # cut off half way
    with pytest.raises(DataError, match="cannot be read"):
        read_texts(tmp_path, "train")


def test_bits_per_byte_equals_a_hand_count():
    import math

    from eventllm.evaluate.perplexity import PerplexityResult, bits_per_byte
    from eventllm.models.registry import ZOO_DIR

    tok = HFTokenizer(ZOO_DIR / "rwkv4-small" / "tokenizer.json")
    nbytes = tok.token_bytes()
    text = "It was a bright cold day — naïve café."
    ids = tok.encode(text)
    assert nbytes[ids].sum() == len(text.encode("utf-8"))  # every byte is in exactly one token
    assert nbytes[tok.eos_id] == 0
    scored = ids[1:]
    res = PerplexityResult(ppl=math.exp(2.0), nll=2.0, tokens=len(scored))
    expect = 2.0 * len(scored) / math.log(2) / len(tok.decode(scored).encode("utf-8"))
    assert bits_per_byte(res, ids, nbytes) == pytest.approx(expect, rel=1e-12)


def test_unwrapping_joins_hard_wrapped_lines_and_keeps_paragraphs(data_dir):
    import io

    from eventllm.data import iter_chunks, unwrap_lines

    assert unwrap_lines("It was a dark\nand stormy night.\n\n  A poem line\n  and another\nEnd.") == \
        "It was a dark and stormy night.\n\n  A poem line\n  and another End."
    text = _book(data_dir).decode("utf-8")
    pieces = list(iter_chunks(io.StringIO(text), size=20_000))
    assert "".join(unwrap_lines(p) for p in pieces) == unwrap_lines(text)  # piece by piece = whole


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
def test_a_share_of_pieces_is_unwrapped_evenly(share):
    from eventllm.data import unwrapped_piece

    picks = [unwrapped_piece(i, share) for i in range(1000)]
    assert abs(sum(picks) / 1000 - share) <= 0.005
    for start in range(0, 1000, 50):  # every run of 50 pieces holds close to the share, not a block of one kind
        assert abs(sum(picks[start:start + 50]) / 50 - share) <= 0.06


def test_the_held_out_text_shipped_in_the_package_is_the_published_one():
    import hashlib
    import lzma

    from eventllm.data import HELDOUT_DIR

    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    assert sha((HELDOUT_DIR / "pg-books" / "test.txt.xz").read_bytes()) == \
        "9a91ed3a1118648b467960beb71d6a0f126e31413da3be1eb30977e5ff4a28ca"
    lambada = (HELDOUT_DIR / "lambada" / "lambada_test.jsonl.xz").read_bytes()
    assert sha(lambada) == "b781750cea211f37d9ec62ee5900a55a756209a4902fcd42c054e97fb33b02ae"
    assert sha(lzma.decompress(lambada)) == "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226"
    for digest in ("9a91ed3a1118648b467960beb71d6a0f126e31413da3be1eb30977e5ff4a28ca",
                   "b781750cea211f37d9ec62ee5900a55a756209a4902fcd42c054e97fb33b02ae"):
        assert digest in (HELDOUT_DIR / "SOURCES.md").read_text()


def test_evaluate_reads_the_shipped_test_split_and_lambada_without_a_data_folder(tmp_path, capsys, monkeypatch):
    import json

    from eventllm.cli import main

    monkeypatch.chdir(tmp_path)  # no ../shared/data beside it
    assert main(["evaluate", "--model", "zoo:rwkv4-tiny", "--max-tokens", "256", "--tasks", "ppl,lambada", "--limit", "3",
                 "--json", "e.json", "-q"]) == 0
    r = json.loads((tmp_path / "e.json").read_text())
    assert r["split"] == "test" and r["data"].endswith("heldout/pg-books") and r["tokens"] == 255
    assert r["tasks"]["lambada"]["file"].endswith("lambada_test.jsonl.xz") and r["tasks"]["lambada"]["dense"]["n"] == 3
