"""Plain-text corpora: reading files or folders of text (plain, .xz or .gz, streamed), the train / valid /
test splits, and token streams cached on disk.

Two kinds of data folder:
  * a folder that holds split files (`train.txt[.xz|.gz]`, `valid.…`, `test.…`, e.g. pg-books): each file
    is its split, read as is (its books are already cleaned);
  * a folder of plain books (e.g. gutenberg/): each book is split on its own, after stripping the Project
    Gutenberg header and licence footer: the first 90% of its characters are `train`, the next 5% `valid`,
    the last 5% `test`; each cut is moved forward to the next blank line so that no paragraph is split.
Training never reads `valid` or `test`.

Tokenising a large split is done once: `cached_token_stream` writes the ids as a uint16 (or uint32) file
keyed by the tokenizer's hash and the source files, and maps it on the next call.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from eventllm.errors import DataError
from eventllm.tokenizer import tokenizer_id

# A short English paragraph (written for this project) to measure event rates on when no corpus is given.
SAMPLE_TEXT = (
    "It was late in the autumn when the old captain came back to the village by the sea. He walked slowly up the "
    "road from the harbour, looking at the houses as if he had never seen them before, and when he reached the inn "
    "he sat down by the fire and asked for a glass of wine and the news of the last ten years."
)

# Held-out text shipped inside the package (eventllm/heldout/SOURCES.md; docs/DATA.md): the pg-books test split, which
# the demo and `evaluate` read when no --data is given, and LAMBADA's test set.
HELDOUT_DIR = Path(__file__).resolve().parent / "heldout"
HELDOUT_TEXT = HELDOUT_DIR / "pg-books"
DATA_DOC = "docs/DATA.md"  # where a user learns what each corpus is and how to assemble a --data folder

SPLITS = ("all", "train", "valid", "test")
SPLIT_FRACTIONS = {"train": (0.0, 0.90), "valid": (0.90, 0.95), "test": (0.95, 1.0)}
TEXT_SUFFIXES = (".txt", ".txt.xz", ".txt.gz")
CHUNK_CHARS = 1 << 20  # streamed text comes in pieces of about this many characters

_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.MULTILINE | re.IGNORECASE)
# A place where text may be cut without changing a byte-level BPE's pre-tokens: inside a whitespace run,
# before its last character, where a visible ASCII character follows (the GPT-2 pattern keeps such a run
# minus its last character as one pre-token, at the end of a string too).
_CUT = re.compile(r"\n(?=\n[!-~])")


_WRAPPED = re.compile(r"(?<=\S)\n(?=\S)")


def unwrap_lines(text: str) -> str:
    """Hard-wrapped paragraphs as one line each: a single line break between two non-space characters
    becomes a space (blank lines, indented lines and everything else stay). Project Gutenberg books wrap
    at ~70 characters; a model trained on them as they are expects a line break every ~10 words and puts a
    third of its probability on one inside unwrapped text (measured on LAMBADA passages with zoo:rwkv4-small).
    Applied piece by piece (see `iter_chunks`) it gives the same text as on the whole."""
    return _WRAPPED.sub(" ", text)


def unwrapped_piece(index: int, share: float) -> bool:
    """Whether piece `index` of a split is unwrapped when a `share` of them is: a golden-ratio sequence, so
    any run of pieces holds close to that share of each kind, deterministically."""
    return ((index + 1) * 0.6180339887498949) % 1.0 < share


def strip_gutenberg(text: str) -> str:
    """The book without the Project Gutenberg header and licence footer (unchanged when it has none)."""
    start = _START.search(text)
    if start:
        text = text[start.end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n\r ") + "\n"


def _cut(text: str, fraction: float) -> int:
    if fraction <= 0.0:
        return 0
    if fraction >= 1.0:
        return len(text)
    pos = int(len(text) * fraction)
    blank = text.find("\n\n", pos)
    return len(text) if blank < 0 else blank + 2


def split_text(text: str, split: str) -> str:
    """The `split` part of one book (see the module docstring)."""
    if split == "all":
        return text
    if split not in SPLIT_FRACTIONS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    lo, hi = SPLIT_FRACTIONS[split]
    return text[_cut(text, lo): _cut(text, hi)]


def is_text_file(path: Path) -> bool:
    return path.name.endswith(TEXT_SUFFIXES)


def _raw(path: Path):
    return lzma.open(path, "rb") if path.name.endswith(".xz") else gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


# reading a file whose content is not what its name says: an .xz/.gz cut short or corrupt (gzip's BadGzipFile is an OSError)
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError)


def _unreadable(path: Path, e: Exception) -> DataError:
    if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile):
        return DataError(f"{path}: cannot be read ({e.strerror or e})")
    return DataError(f"{path}: cannot be read ({e}); is the file complete and of the type its name says?")


def _check_text(path: Path, sample: int = 1 << 16) -> None:
    """Refuse a file that is not text: NUL bytes, or more than 1% of undecodable characters, in its first 64 KiB
    (a stray invalid byte in a book is decoded as U+FFFD; a binary file would give silently meaningless numbers)."""
    try:
        with _raw(path) as f:
            head = f.read(sample)
    except _READ_ERRORS as e:
        raise _unreadable(path, e) from None
    text = head.decode("utf-8", errors="replace")
    if b"\x00" in head or text.count("\ufffd") > 0.01 * max(1, len(text)):
        raise DataError(f"{path}: not UTF-8 text (binary, or another encoding); pass a UTF-8 .txt, .txt.xz or .txt.gz file")


def open_text(path: str | Path) -> io.TextIOBase:
    """A text stream of `path` (UTF-8; .xz and .gz decompressed on the fly)."""
    path = Path(path)
    _check_text(path)
    try:
        return io.TextIOWrapper(_raw(path), encoding="utf-8", errors="replace", newline="")
    except _READ_ERRORS as e:
        raise _unreadable(path, e) from None


def _read_file(path: Path) -> str:
    try:
        with open_text(path) as f:
            return f.read()
    except _READ_ERRORS as e:
        raise _unreadable(path, e) from None


def split_files(folder: Path) -> dict[str, Path]:
    """The split files of a folder ({'train': …, 'valid': …, 'test': …}); empty for a folder of books."""
    found: dict[str, Path] = {}
    if folder.is_dir():
        for split in ("train", "valid", "test"):
            for suffix in TEXT_SUFFIXES:
                if (folder / (split + suffix)).is_file():
                    found[split] = folder / (split + suffix)
                    break
    return found


def text_files(path: str | Path) -> list[Path]:
    """The text files named by `path` (a file, or a folder searched recursively), sorted."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder of text; {DATA_DOC} says what each corpus is and where to get it")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and is_text_file(p))
    if not files:
        raise DataError(f"{path}: the folder holds no .txt, .txt.xz or .txt.gz files")
    return files


def _sources(path: str | Path, split: str) -> tuple[list[Path], bool]:
    """The files that hold `split` of `path`, and whether each is split per book (else read whole)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(path)
    named = split_files(path)
    if named:
        if split == "all":
            return [named[s] for s in ("train", "valid", "test") if s in named], False
        if split not in named:
            raise DataError(f"{path}: the folder has split files but no {split}.txt[.xz|.gz]; choose one of {', '.join(named)}")
        return [named[split]], False
    return text_files(path), True


def read_texts(path: str | Path, split: str = "all") -> list[str]:
    """One string per file under `path`, restricted to `split` (see the module docstring)."""
    files, per_book = _sources(path, split)
    out = [split_text(strip_gutenberg(_read_file(f)), split) if per_book else _read_file(f) for f in files]
    if not any(t.strip() for t in out):
        raise DataError(f"{path}: no text in split {split!r} (the files are empty); pass a folder or file with text")
    return out


def iter_chunks(text_stream: io.TextIOBase, size: int = CHUNK_CHARS) -> Iterator[str]:
    """Pieces of a text stream, cut only where a byte-level BPE's tokens do not change (see `_CUT`), so that
    tokenising the pieces one by one gives exactly the tokens of the whole text."""
    carry = ""
    while True:
        block = text_stream.read(size)
        if not block:
            break
        carry += block
        cut = None
        for m in _CUT.finditer(carry, max(0, len(carry) - size // 2)):
            cut = m.end()
        if cut is None or cut >= len(carry) - 1:
            continue  # no safe cut yet (or it depends on what comes next): read more
        yield carry[:cut]
        carry = carry[cut:]
    if carry:
        yield carry


def iter_documents(path: str | Path, split: str = "all") -> Iterator[list[str]]:
    """Each source document of `split` as a list of pieces (see `iter_chunks`), streamed from disk."""
    files, per_book = _sources(path, split)
    for f in files:
        if per_book:
            yield [split_text(strip_gutenberg(_read_file(f)), split)]
        else:
            try:
                with open_text(f) as stream:
                    yield list(iter_chunks(stream))
            except _READ_ERRORS as e:
                raise _unreadable(f, e) from None


def token_stream(texts: list[str], tok) -> np.ndarray:
    """All texts as one token stream, books separated by the end-of-text token."""
    ids: list[int] = []
    for t in texts:
        ids.extend(tok.encode(t))
        if tok.eos_id is not None:
            ids.append(tok.eos_id)
    return np.asarray(ids, dtype=np.int32)


def _encode_pieces(pieces: list[str], tok) -> list[int]:
    batch = getattr(tok, "encode_batch", None)
    if batch is not None:
        return [i for ids in batch(pieces) for i in ids]
    return [i for p in pieces for i in tok.encode(p)]


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVENTLLM_CACHE", Path.home() / ".cache" / "eventllm")) / "tokens"


def cached_token_stream(path: str | Path, split: str, tok, cache_dir: str | Path | None = None,
                        progress: bool = True, unwrap: float = 0.0) -> np.ndarray:
    """The token stream of `split` of `path` (as `token_stream(read_texts(...))`), tokenised once and kept in
    `cache_dir` as a uint16/uint32 file keyed by the tokenizer's hash and the source files. `unwrap` (0 to 1,
    True = 1) is the share of pieces whose hard-wrapped lines are joined first (`unwrap_lines`), chosen by
    `unwrapped_piece` so that a model sees both hard-wrapped books and paragraphs on one line."""
    from tqdm import tqdm

    files, _ = _sources(path, split)
    tok_hash = tokenizer_id(tok)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    unwrap = float(unwrap)
    if not 0.0 <= unwrap <= 1.0:
        raise DataError(f"unwrap must be a share between 0 and 1 (or true/false), not {unwrap}")
    tag = "" if unwrap == 0.0 else "-unwrapped" if unwrap == 1.0 else f"-unwrapped{unwrap:g}"
    name = f"{Path(path).name}-{split}{tag}-{_fingerprint(files)}-{tok_hash}.{np.dtype(dtype).name}"
    target = cache_dir / name
    if target.exists():
        return np.fromfile(target, dtype=dtype)
    for f in files:  # before the progress bar: a file that is not text is one error line, not a bar and a line
        _check_text(f)
    total = sum(f.stat().st_size for f in files)
    parts: list[np.ndarray] = []
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"tokenising {Path(path).name}/{split}", disable=not progress) as bar:
        piece_no, text_seen = 0, False
        for f, doc in zip(files, iter_documents(path, split)):
            ids: list[int] = []
            text_seen = text_seen or any(p.strip() for p in doc)
            if unwrap:
                doc = [unwrap_lines(p) if unwrapped_piece(piece_no + i, unwrap) else p for i, p in enumerate(doc)]
            piece_no += len(doc)
            for i in range(0, len(doc), 16):
                ids.extend(_encode_pieces(doc[i:i + 16], tok))
            if tok.eos_id is not None:
                ids.append(tok.eos_id)  # as token_stream: one end-of-text after each file
            parts.append(np.asarray(ids, dtype=dtype))
            bar.update(f.stat().st_size)
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    if not text_seen:
        what = "the files are empty or blank" if split == "all" else f"the files, or their {split} share, hold only blanks"
        raise DataError(f"{path}: no text in split {split!r} ({what}); pass a folder or file with more text")
    if not out.size:
        raise DataError(f"{path}: no text in split {split!r}; pass a folder or file with text")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        out.tofile(tmp)
        os.replace(tmp, target)
    except OSError:
        pass  # a read-only cache folder only costs the time to tokenise again
    return out
