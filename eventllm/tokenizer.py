"""One small tokenizer interface over the tokenizers real checkpoints ship with.

    HFTokenizer(path)        a Hugging Face `tokenizer.json` (the zoo models use a byte-level BPE of this kind)
    RWKVWorldTokenizer()     the RWKV World vocabulary that the `rwkv` package ships (65 536 tokens)
    ByteTokenizer()          one token per byte (256 tokens), for freshly initialised byte-level models
    load_tokenizer(folder)   the tokenizer that sits beside a model, by file name
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from eventllm.errors import CheckpointError


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer read from a tokenizer.json file."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as _Tok

        self.path = Path(path)
        try:
            self._tok = _Tok.from_file(str(self.path))
        except Exception as e:  # tokenizers raises a plain Exception for a malformed file
            raise CheckpointError(f"{self.path}: not a readable tokenizer.json ({e})") from None
        self.vocab_size = self._tok.get_vocab_size()
        self.eos_id = self._tok.token_to_id("<|endoftext|>") if self._tok.token_to_id("<|endoftext|>") is not None else self._tok.token_to_id("</s>")

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once (in parallel threads)."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self):
        """The number of UTF-8 bytes each token id stands for (0 for special tokens): for bits per byte."""
        import json

        import numpy as np

        out = np.zeros(self.vocab_size, dtype=np.int64)
        spec = json.loads(self.path.read_text(encoding="utf-8"))
        special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        byte_level = (spec.get("pre_tokenizer") or {}).get("type") == "ByteLevel"
        for piece, i in self._tok.get_vocab(with_added_tokens=True).items():
            if i in special or i >= self.vocab_size:
                continue
            # byte-level BPE: one vocabulary character per byte; otherwise the decoded text's bytes
            out[i] = len(piece) if byte_level else len(self._tok.decode([i]).encode("utf-8"))
        return out

    def fingerprint(self) -> str:
        """A short hash of the tokenizer file: token caches are keyed by it."""
        import hashlib

        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


class RWKVWorldTokenizer:
    """The RWKV World vocabulary (rwkv_vocab_v20230424) through the `rwkv` package's trie tokenizer."""

    def __init__(self, vocab_file: str | Path | None = None):
        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

        if vocab_file is None:
            import rwkv

            vocab_file = Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"
        self._tok = TRIE_TOKENIZER(str(vocab_file))
        self.vocab_size = 65536
        self.eos_id = 0

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decodeBytes([i for i in ids if i != 0]).decode("utf-8", errors="replace")

    def token_bytes(self):
        import numpy as np

        return np.asarray([0] + [len(self._tok.decodeBytes([i])) for i in range(1, self.vocab_size)], dtype=np.int64)


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255."""

    vocab_size = 256
    eos_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_bytes(self):
        import numpy as np

        return np.ones(256, dtype=np.int64)


def tokenizer_id(tok) -> str:
    """What tells one tokenizer's token streams from another's: the hash of its file (`HFTokenizer.fingerprint`), or
    the class of a built-in one (bytes, RWKV World)."""
    return getattr(tok, "fingerprint", lambda: type(tok).__name__)()


def load_tokenizer(folder: str | Path, vocab_size: int) -> Tokenizer:
    """The tokenizer for a model with `vocab_size` tokens stored in (or beside) `folder`."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    if (folder / "tokenizer.json").exists():
        tok = HFTokenizer(folder / "tokenizer.json")
        if tok.vocab_size > vocab_size:
            raise CheckpointError(f"{folder / 'tokenizer.json'}: {tok.vocab_size} tokens but the model has only {vocab_size}; wrong tokenizer for this model")
        return tok
    if vocab_size == 65536:
        return RWKVWorldTokenizer()
    if vocab_size == 256:
        return ByteTokenizer()
    raise CheckpointError(
        f"{folder}: no tokenizer.json beside the model and its vocabulary ({vocab_size}) is neither RWKV World (65536) nor bytes (256); "
        "put the model's tokenizer.json next to it"
    )
