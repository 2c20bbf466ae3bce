"""RWKV-4: sequence mode = recurrent step mode = Hugging Face transformers = BlinkDL's `rwkv` package."""

import pytest
import torch

from eventllm.models.checkpoints import save_blinkdl
from eventllm.models.rwkv import RWKV, RWKVConfig, wkv_chunked, wkv_step

TOL = 1e-4


def run_steps(model, idx):
    state = model.init_state(idx.shape[0])
    outs = []
    with torch.no_grad():
        for t in range(idx.shape[1]):
            logits, state = model(idx[:, t : t + 1], state)
            outs.append(logits)
    return torch.cat(outs, 1), state


def test_sequence_mode_equals_step_mode(small_rwkv, tokens):
    with torch.no_grad():
        seq, seq_state = small_rwkv(tokens)
    step, step_state = run_steps(small_rwkv, tokens)
    assert (seq - step).abs().max() <= TOL
    for a, b in zip(seq_state.tensors(), step_state.tensors()):
        assert torch.allclose(a, b, atol=TOL, rtol=1e-5)


def test_state_carries_across_calls(small_rwkv, tokens):
    with torch.no_grad():
        whole, _ = small_rwkv(tokens)
        first, state = small_rwkv(tokens[:, :33])
        second, _ = small_rwkv(tokens[:, 33:], state)
    assert (torch.cat([first, second], 1) - whole).abs().max() <= TOL


def test_wkv_chunk_size_does_not_change_the_result():
    g = torch.Generator().manual_seed(0)
    B, T, C = 2, 50, 8
    w = -torch.exp(torch.rand(C, generator=g) * 4 - 2)
    u = torch.rand(C, generator=g)
    k = torch.randn(B, T, C, generator=g) * 3
    v = torch.randn(B, T, C, generator=g)
    a, b, p = torch.zeros(B, C), torch.zeros(B, C), torch.full((B, C), -1e38)
    ref = []
    sa, sb, sp = a, b, p
    for t in range(T):
        o, sa, sb, sp = wkv_step(w, u, k[:, t], v[:, t], sa, sb, sp)
        ref.append(o)
    ref = torch.stack(ref, 1)
    for chunk in (1, 7, 32, 64):
        out, ca, cb, cp = wkv_chunked(w, u, k, v, a, b, p, chunk=chunk)
        assert (out - ref).abs().max() <= 1e-5, chunk
        # the carried state is the same quantity up to the shared log-scale
        assert torch.allclose(ca * torch.exp(cp - sp), sa, atol=1e-4, rtol=1e-4)


def test_cpu_kernel_equals_the_step_recurrence_and_the_chunked_form():
    from eventllm.models import wkv_cpu

    assert wkv_cpu.available(), f"the CPU WKV kernel did not build: {wkv_cpu._failed}"
    g = torch.Generator().manual_seed(1)
    B, T, C = 3, 70, 70  # C not a multiple of the kernel's 64-channel blocks
    w = -torch.exp(torch.rand(C, generator=g) * 6 - 3)
    u = torch.rand(C, generator=g)
    k = torch.randn(B, T, C, generator=g) * 3
    v = torch.randn(B, T, C, generator=g)
    # a carried state (not a fresh one): a run of earlier tokens
    a, b, p = torch.zeros(B, C), torch.zeros(B, C), torch.full((B, C), -1e38)
    for t in range(5):
        _, a, b, p = wkv_step(w, u, k[:, t] - 1, v[:, t] + 1, a, b, p)
    ref, sa, sb, sp = [], a, b, p
    for t in range(T):
        o, sa, sb, sp = wkv_step(w, u, k[:, t], v[:, t], sa, sb, sp)
        ref.append(o)
    ref = torch.stack(ref, 1)
    out, ca, cb, cp = wkv_cpu.wkv_cpu(w, u, k, v, a, b, p)
    assert (out - ref).abs().max() <= 1e-5
    for got, want in ((ca, sa), (cb, sb), (cp, sp)):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    chunked, *_ = wkv_chunked(w, u, k, v, a, b, p)
    assert (out - chunked).abs().max() <= 1e-5
    before = [t.clone() for t in (a, b, p)]
    wkv_cpu.wkv_cpu(w, u, k, v, a, b, p)
    assert all(torch.equal(x, y) for x, y in zip(before, (a, b, p)))  # the caller's state tensors are not written
    with pytest.raises(RuntimeError, match="no backward pass"):  # never a silently missing gradient
        wkv_cpu.wkv_cpu(w, u, k.clone().requires_grad_(), v, a, b, p)


def test_sequence_mode_uses_the_cpu_kernel_only_without_gradients(small_rwkv, tokens):
    small_rwkv.wkv_impl = "chunked"
    with torch.no_grad():
        chunked, _ = small_rwkv(tokens)
    small_rwkv.wkv_impl = "auto"
    with torch.no_grad():
        kernel, _ = small_rwkv(tokens)
    assert (kernel - chunked).abs().max() <= TOL
    logits, _ = small_rwkv(tokens[:, :8])  # with gradients: the chunked form (the kernel has no backward)
    logits.sum().backward()
    assert small_rwkv.blocks[0].att.time_decay.grad is not None
    small_rwkv.zero_grad()


def test_matches_transformers_rwkv(small_rwkv, tokens):
    from transformers import RwkvConfig, RwkvForCausalLM

    c = small_rwkv.config
    hf = RwkvForCausalLM(RwkvConfig(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer,
                                    attention_hidden_size=c.d_attention, intermediate_size=c.d_ffn, rescale_every=0)).eval()
    hf.load_state_dict(small_rwkv.to_hf().state_dict())
    with torch.no_grad():
        ours, _ = small_rwkv(tokens)
        theirs = hf(tokens).logits
    assert (ours - theirs).abs().max() <= TOL


def test_matches_blinkdl_rwkv_package(small_rwkv, tokens, tmp_path):
    from rwkv.model import RWKV as BlinkDLRWKV

    path = save_blinkdl(small_rwkv, tmp_path / "model.pth")
    ref = BlinkDLRWKV(model=str(path), strategy="cpu fp32", verbose=False)
    seq = tokens[0].tolist()
    expected, _ = ref.forward(seq, None, full_output=True)
    with torch.no_grad():
        ours, _ = small_rwkv(tokens[:1])
    assert (ours[0] - expected).abs().max() <= TOL
    # and token by token through the package's own recurrent path
    state, last = None, None
    for t in seq[:10]:
        last, state = ref.forward([t], state)
    step, _ = run_steps(small_rwkv, tokens[:1, :10])
    assert (step[0, -1] - last).abs().max() <= TOL


def test_config_rejects_bad_sizes():
    import pytest

    from eventllm.errors import ConfigError

    with pytest.raises(ConfigError, match="d_model must be a positive integer"):
        RWKVConfig(d_model=0)
    assert RWKV(RWKVConfig(vocab_size=10, d_model=8, n_layer=1)).config.d_ffn == 32
