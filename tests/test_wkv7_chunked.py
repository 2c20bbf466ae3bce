"""The chunked WKV-7 (matrix products over chunks of tokens) equals the token-by-token recurrence: outputs, final
state and gradients, on odd shapes, lengths that are not a multiple of the chunk, and under bf16 autocast."""

import math

import pytest
import torch

from eventllm.errors import ConfigError
from eventllm.models.rwkv7 import DECAY_SCALE
from eventllm.models.wkv7 import CHUNK, CHUNKED_FROM, wkv7, wkv7_chunked, wkv7_scan

TOL = 1e-3


def inputs(B, T, H, N, seed=0):
    """RWKV-7-shaped inputs: decays over the whole of its range (down to e^-e^-½), unit κ, rates in (0, 1), and a
    start state that is not zero (a sequence continued from an earlier one)."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, H, N)
    r, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    w = torch.exp(-DECAY_SCALE * torch.sigmoid(4 * torch.randn(shape, generator=g)))
    kappa = torch.nn.functional.normalize(torch.randn(shape, generator=g), dim=-1)
    a = torch.sigmoid(2 * torch.randn(shape, generator=g))
    S = 0.5 * torch.randn(B, H, N, N, generator=g)
    return [S, r, w, k, v, kappa, a]


@pytest.mark.parametrize("B, T, H, N, chunk", [(2, 37, 3, 7, 8), (1, 45, 2, 16, 16), (3, 5, 1, 5, 16), (1, 9, 2, 6, 1),
                                               (1, 130, 1, 32, 64)])
def test_chunked_equals_the_recurrence(B, T, H, N, chunk):
    xs = inputs(B, T, H, N)
    y_ref, S_ref = wkv7_scan(*xs)
    y, S = wkv7_chunked(*xs, chunk=chunk)
    assert y.shape == y_ref.shape == (B, T, H, N) and S.shape == S_ref.shape
    scale = y_ref.abs().max().item()
    assert scale > 1.0  # the outputs are not vanishing: a real comparison
    assert (y - y_ref).abs().max().item() <= TOL and (S - S_ref).abs().max().item() <= TOL


def test_chunked_gradients_equal_the_recurrences():
    xs = inputs(2, 29, 3, 8, seed=1)
    grads = []
    for fn in (wkv7_scan, lambda *x: wkv7_chunked(*x, chunk=8)):
        leaves = [x.clone().requires_grad_() for x in xs]
        y, S = fn(*leaves)
        (y.sin().sum() + S.square().sum()).backward()
        grads.append([x.grad for x in leaves])
    for name, g_ref, g in zip(("S", "r", "w", "k", "v", "kappa", "a"), *grads):
        assert (g - g_ref).abs().max().item() <= TOL * max(1.0, g_ref.abs().max().item()), name


def test_chunked_runs_in_float32_under_bf16_autocast():
    xs = inputs(1, 40, 2, 16, seed=2)
    y_ref, _ = wkv7_scan(*xs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, S = wkv7_chunked(*xs, chunk=16)
    assert y.dtype == S.dtype == torch.float32
    assert (y - y_ref).abs().max().item() <= TOL


def test_the_sequence_mode_takes_the_chunked_form_from_a_few_tokens():
    short, long_ = inputs(1, CHUNKED_FROM - 1, 2, 8), inputs(1, 3 * CHUNKED_FROM + 1, 2, 8)
    assert torch.equal(wkv7(*short)[0], wkv7_scan(*short)[0])
    T = long_[1].shape[1]
    assert torch.equal(wkv7(*long_)[0], wkv7_chunked(*long_, chunk=min(CHUNK, T))[0])


def test_a_bad_chunk_is_one_clear_error():
    with pytest.raises(ConfigError, match="`chunk` must be a positive number of tokens, got 0"):
        wkv7_chunked(*inputs(1, 4, 1, 4), chunk=0)


def test_decay_bound_keeps_a_long_chunk_finite():
    """RWKV-7's fastest decay (every w at its minimum e^-e^-½) over a 128-token chunk: 1/γ reaches
    e^(128·e^-½) ≈ 6e33, still inside float32, and the result still equals the recurrence."""
    xs = inputs(1, 128, 1, 8, seed=3)
    xs[2] = torch.full_like(xs[2], math.exp(-DECAY_SCALE))
    y, S = wkv7_chunked(*xs, chunk=128)
    y_ref, S_ref = wkv7_scan(*xs)
    assert torch.isfinite(y).all() and (y - y_ref).abs().max().item() <= TOL
