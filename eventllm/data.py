"""Plain-text corpora: reading files or folders of .txt, stripping Project Gutenberg boilerplate, and the
fixed train / valid / test split the zoo models are trained and evaluated on.

The split, per book (each file on its own, after stripping the Gutenberg header and licence footer):
the first 90% of its characters are `train`, the next 5% `valid`, the last 5% `test`; each cut is moved
forward to the next blank line so that no paragraph is split. Training never reads `valid` or `test`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from eventllm.errors import DataError

# A short English paragraph (written for this project) to measure event rates on when no corpus is given.
SAMPLE_TEXT = (
    "It was late in the autumn when the old captain came back to the village by the sea. He walked slowly up the "
    "road from the harbour, looking at the houses as if he had never seen them before, and when he reached the inn "
    "he sat down by the fire and asked for a glass of wine and the news of the last ten years."
)

SPLITS = ("all", "train", "valid", "test")
SPLIT_FRACTIONS = {"train": (0.0, 0.90), "valid": (0.90, 0.95), "test": (0.95, 1.0)}

_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.MULTILINE | re.IGNORECASE)


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


def text_files(path: str | Path) -> list[Path]:
    """The .txt files named by `path` (a file, or a folder searched recursively), sorted."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder of text")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{path}: the folder holds no .txt files")
    return files


def read_texts(path: str | Path, split: str = "all") -> list[str]:
    """One string per file under `path`, boilerplate stripped, restricted to `split`."""
    out = []
    for f in text_files(path):
        try:
            raw = f.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise DataError(f"{f}: cannot be read ({e.strerror})") from None
        out.append(split_text(strip_gutenberg(raw), split))
    if not any(t.strip() for t in out):
        raise DataError(f"{path}: no text in split {split!r} (the files are empty); pass a folder or file with text")
    return out


def token_stream(texts: list[str], tok) -> np.ndarray:
    """All texts as one token stream, books separated by the end-of-text token."""
    ids: list[int] = []
    for t in texts:
        ids.extend(tok.encode(t))
        if tok.eos_id is not None:
            ids.append(tok.eos_id)
    return np.asarray(ids, dtype=np.int32)
