"""Perplexity over a token stream.

RWKV (recurrent): the stream is cut into chunks and the recurrent state is carried from chunk to chunk, so
every token is conditioned on everything before it — the result does not depend on the chunk size.
OPT (fixed context): sliding windows of `window` tokens moved by `stride`; each token is scored once, in
the first window that contains it past the overlap (as in the Hugging Face perplexity guide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eventllm.errors import DataError
from eventllm.models.base import CausalLM


@dataclass
class PerplexityResult:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # tokens scored


@torch.no_grad()
def perplexity(model: CausalLM, ids: list[int] | torch.Tensor, chunk: int = 1024, window: int | None = None,
               stride: int | None = None, progress: bool = False, desc: str = "perplexity") -> PerplexityResult:
    """Perplexity of `model` on the token stream `ids` (the first token is context only).

    `chunk` applies to recurrent models; `window` (default: the model's positions) and `stride` (default:
    half the window) to fixed-context ones.
    """
    from tqdm import tqdm

    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise DataError(f"perplexity needs at least 2 tokens, got {ids.numel()}; pass more text")
    model.eval()
    ids = ids.to(next(model.parameters()).device)
    total, count = 0.0, 0
    if model.recurrent:
        state = None
        starts = range(0, ids.numel() - 1, chunk)
        for s in tqdm(starts, desc=desc, disable=not progress, unit="chunk"):
            x = ids[s : min(s + chunk, ids.numel() - 1)][None]
            y = ids[s + 1 : s + 1 + x.shape[1]]
            logits, state = model(x, state)
            total += F.cross_entropy(logits[0].float(), y, reduction="sum").item()
            count += y.numel()
    else:
        window = min(window or model.config.max_positions, model.config.max_positions)
        stride = min(stride or window // 2, window)
        prev_end = 0
        starts = list(range(0, ids.numel() - 1, stride))
        for begin in tqdm(starts, desc=desc, disable=not progress, unit="window"):
            end = min(begin + window, ids.numel())
            x = ids[begin:end][None]
            logits, _ = model(x[:, :-1])
            # score only the tokens (positions begin+1 … end-1) not scored by an earlier window
            first_new = max(prev_end, begin + 1)
            tgt = ids[first_new:end]
            if tgt.numel():
                lg = logits[0, first_new - begin - 1 : end - begin - 1]
                total += F.cross_entropy(lg.float(), tgt, reduction="sum").item()
                count += tgt.numel()
            prev_end = end
            if end == ids.numel():
                break
    nll = total / count
    return PerplexityResult(ppl=math.exp(nll), nll=nll, tokens=count)


def bits_per_byte(result: PerplexityResult, ids, byte_lengths) -> float:
    """Bits per UTF-8 byte of the scored text (tokens 1…N-1): the tokenizer-independent loss,
    Σ nll / ln 2 / Σ bytes(token). `byte_lengths[i]` is the byte count of token id i (tokenizer.token_bytes())."""
    import numpy as np

    ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).ravel()
    n_bytes = int(np.asarray(byte_lengths)[ids[1:]].sum())
    if n_bytes <= 0:
        raise DataError("the scored tokens stand for no bytes of text; pass text, not only special tokens")
    return result.nll * result.tokens / math.log(2) / n_bytes


def unigram_perplexity(train_ids: list[int], eval_ids: list[int], vocab_size: int) -> float:
    """Perplexity of the add-one-smoothed unigram model of `train_ids` on `eval_ids[1:]` (the baseline to beat)."""
    counts = torch.bincount(torch.as_tensor(train_ids, dtype=torch.long), minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return math.exp(-logp[torch.as_tensor(eval_ids[1:], dtype=torch.long)].mean().item())
