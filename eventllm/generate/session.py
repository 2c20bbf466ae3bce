"""A text-generation session: prompts in, streamed tokens out, with per-token sparsity, energy and latency.

The recurrent state carries over from one prompt to the next (a conversation), and every token —
prompt and generated — is counted. `Session.summary()` gives the figures of the whole session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from eventllm.generate.backends import TokenStats
from eventllm.generate.sampling import Sampling, next_token, repeated_ngram_share
from eventllm.tokenizer import Tokenizer


@dataclass
class Turn:
    prompt: str
    reply_ids: list[int] = field(default_factory=list)
    reply: str = ""


class Session:
    """Feeds prompts to a backend and samples replies, carrying the state between turns.

    >>> s = Session(backend, tokenizer, Sampling(), max_tokens=40)     # doctest: +SKIP
    >>> for piece in s.reply("It was a dark night"): print(piece, end="")
    >>> s.summary()["energy_per_token_j"]
    """

    def __init__(self, backend, tokenizer: Tokenizer, sampling: Sampling = Sampling(), max_tokens: int = 64,
                 stop: str | None = None):
        self.backend, self.tok, self.sampling, self.max_tokens = backend, tokenizer, sampling, max_tokens
        self.stop = stop or None  # a reply also ends where this text appears in it (after its leading line breaks)
        self.generator = torch.Generator().manual_seed(sampling.seed)
        self.stats: list[TokenStats] = []
        self.turns: list[Turn] = []
        self.generated = 0
        self.seconds = 0.0
        self.logits: torch.Tensor | None = None

    def _feed(self, token: int) -> None:
        t = time.perf_counter()
        self.logits, st = self.backend.step(token)
        self.seconds += time.perf_counter() - t
        self.stats.append(st)

    def reply(self, prompt: str, on_token: Callable[[TokenStats], None] | None = None) -> Iterator[str]:
        """Feed `prompt`, then yield the reply's text piece by piece (one token each) until max_tokens, the
        end-of-text token or, when the session has a stop text, that text."""
        ids = self.tok.encode(prompt)
        if not ids and self.logits is None:
            return
        turn = Turn(prompt)
        self.turns.append(turn)
        for t in ids:
            self._feed(t)
        text_so_far = ""
        for _ in range(self.max_tokens):
            tok = next_token(self.logits, self.sampling, self.generator)
            if self.tok.eos_id is not None and tok == self.tok.eos_id:
                break
            turn.reply_ids.append(tok)
            self.generated += 1
            self._feed(tok)
            if on_token:
                on_token(self.stats[-1])
            text = self.tok.decode(turn.reply_ids)
            piece, text_so_far = text[len(text_so_far):], text
            yield piece
            if self.stop is not None and self.stop in text.lstrip("\n"):
                break
        turn.reply = self.tok.decode(turn.reply_ids)

    def repeated_ngram_share(self, n: int = 4) -> float:
        """Share of the replies' n-grams that repeat an earlier n-gram of the same reply (token-weighted)."""
        grams = [max(0, len(t.reply_ids) - n + 1) for t in self.turns]
        if not sum(grams):
            return 0.0
        return sum(g * repeated_ngram_share(t.reply_ids, n) for g, t in zip(grams, self.turns)) / sum(grams)

    def summary(self) -> dict:
        """Figures of the whole session (means per token over every token the backend processed)."""
        n = len(self.stats)
        out = {"backend": self.backend.name, "turns": len(self.turns), "tokens": n, "generated_tokens": self.generated,
               "tokens_per_s": n / self.seconds if self.seconds else 0.0,
               "sparsity": float(np.mean([s.sparsity for s in self.stats])) if n else 0.0,
               "repeated_4gram_share": self.repeated_ngram_share(4)}
        if n and self.stats[0].energy_j is not None:
            e = float(np.mean([s.energy_j for s in self.stats]))
            lat = float(np.mean([s.latency_s for s in self.stats]))
            de = float(np.mean([s.dense_energy_j for s in self.stats]))
            dl = float(np.mean([s.dense_latency_s for s in self.stats]))
            out.update({"energy_per_token_j": e, "latency_per_token_s": lat, "dense_energy_per_token_j": de,
                        "dense_latency_per_token_s": dl, "energy_ratio": de / e, "latency_ratio": dl / lat})
        return out
