"""Choosing the next token (greedy, temperature, top-p) and a plain generation loop over the recurrent state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from eventllm.generate import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from eventllm.models.base import CausalLM
from eventllm.tokenizer import Tokenizer


@dataclass
class Sampling:
    temperature: float = DEFAULT_TEMPERATURE  # 0: greedy
    top_p: float = DEFAULT_TOP_P
    seed: int = 1

    @classmethod
    def greedy(cls) -> "Sampling":
        return cls(temperature=0.0, top_p=1.0)


def repeated_ngram_share(ids: list[int], n: int = 4) -> float:
    """The share of the n-grams of `ids` that already occurred earlier in `ids` (0: no repetition; a text
    that loops one sentence approaches 1)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> int:
    """The next token from the last position's logits [vocab]."""
    if sampling.temperature <= 0:
        return int(logits.argmax())
    scaled = logits.float() / sampling.temperature
    if not torch.isfinite(scaled.max()):  # a temperature so small that the logits overflow: its limit, greedy
        return int(logits.argmax())
    probs = torch.softmax(scaled, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < sampling.top_p  # the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


@torch.no_grad()
def stream_tokens(model: CausalLM, prompt_ids: list[int], max_tokens: int, sampling: Sampling = Sampling(),
                  stop_id: int | None = None) -> Iterator[int]:
    """Yield up to `max_tokens` new tokens after the prompt, one at a time, carrying the model state."""
    model.eval()
    g = torch.Generator().manual_seed(sampling.seed)
    logits, state = model(torch.tensor([prompt_ids], dtype=torch.long), model.init_state(1))
    last = logits[0, -1]
    for _ in range(max_tokens):
        tok = next_token(last, sampling, g)
        if stop_id is not None and tok == stop_id:
            return
        yield tok
        last, state = model.step(tok, state)


def generate_text(model: CausalLM, tokenizer: Tokenizer, prompt: str, max_tokens: int = 50, sampling: Sampling = Sampling()) -> str:
    """The continuation of `prompt` as text."""
    ids = list(stream_tokens(model, tokenizer.encode(prompt), max_tokens, sampling, stop_id=tokenizer.eos_id))
    return tokenizer.decode(ids)
