"""Perplexity: exact state carrying for RWKV, sliding windows for OPT, clear errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from eventllm.errors import DataError
from eventllm.evaluate.perplexity import perplexity


def full_sequence_nll(model, ids):
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
    return F.cross_entropy(logits[0], ids[1:]).item()


def test_rwkv_chunks_carry_the_state_exactly(small_rwkv, tokens):
    ids = tokens.flatten()
    expected = full_sequence_nll(small_rwkv, ids)
    for chunk in (7, 50, 1024):
        res = perplexity(small_rwkv, ids, chunk=chunk)
        assert res.tokens == ids.numel() - 1
        assert res.nll == pytest.approx(expected, abs=1e-5)
        assert res.ppl == pytest.approx(math.exp(expected), rel=1e-5)


def test_opt_window_covering_the_text_is_the_full_sequence(small_opt, tokens):
    ids = tokens.flatten()[:100]
    res = perplexity(small_opt, ids, window=128)
    assert res.tokens == 99
    assert res.nll == pytest.approx(full_sequence_nll(small_opt, ids), abs=1e-5)


def test_opt_sliding_windows_score_each_token_once(small_opt, tokens):
    ids = tokens.flatten()  # 140 tokens > 128 positions
    res = perplexity(small_opt, ids, window=64, stride=16)
    assert res.tokens == ids.numel() - 1


def test_too_little_text_is_an_error(small_rwkv):
    with pytest.raises(DataError, match="at least 2 tokens"):
        perplexity(small_rwkv, [5])
