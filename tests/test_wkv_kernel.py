"""The fused WKV kernel (eventllm/models/wkv_kernel.py) computes the reference recurrence and its gradients.

On a CUDA machine the kernel runs on the GPU; elsewhere the same Triton kernels run through Triton's
interpreter (TRITON_INTERPRET=1, in a subprocess since the variable is read at import).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from eventllm.models.rwkv import P_INIT, wkv_step

triton = pytest.importorskip("triton", reason="the fused kernel is written in Triton (pip install triton)")

CHECK = textwrap.dedent('''
    import torch
    from eventllm.models import wkv_kernel
    from eventllm.models.rwkv import P_INIT, wkv_step

    def reference(w, u, k, v, a, b, p):
        ys = []
        for t in range(k.shape[1]):
            y, a, b, p = wkv_step(w, u, k[:, t], v[:, t], a, b, p)
            ys.append(y)
        return torch.stack(ys, 1), a, b, p

    def worst_error(N, T, C, fresh, seed, device):
        g = torch.Generator().manual_seed(seed)
        f64 = dict(dtype=torch.float64)
        decay = torch.randn(C, generator=g, **f64).requires_grad_()
        u = torch.randn(C, generator=g, **f64).requires_grad_()
        k = (2 * torch.randn(N, T, C, generator=g, **f64)).requires_grad_()
        v = torch.randn(N, T, C, generator=g, **f64).requires_grad_()
        if fresh:
            a, b, p = torch.zeros(N, C, **f64), torch.zeros(N, C, **f64), torch.full((N, C), P_INIT, **f64)
        else:
            a, b, p = torch.randn(N, C, generator=g, **f64), torch.rand(N, C, generator=g, **f64) + 0.5, torch.randn(N, C, generator=g, **f64)
        y, a1, b1, p1 = reference(-torch.exp(decay), u, k, v, a, b, p)
        gy = torch.randn(y.shape, generator=g, **f64)
        (y * gy).sum().backward()
        leaves = [x.detach().to(device, torch.float32).requires_grad_() for x in (decay, u, k, v)]
        yf, af, bf, pf = wkv_kernel.wkv_fused(-torch.exp(leaves[0]), leaves[1], leaves[2], leaves[3],
                                              *(s.to(device, torch.float32) for s in (a, b, p)))
        (yf * gy.to(device, torch.float32)).sum().backward()
        def rel(x, r):
            x = torch.zeros(1, dtype=torch.float64) if x is None else x.detach().double().cpu()
            r = torch.zeros(1, dtype=torch.float64) if r is None else r.detach()
            return ((x - r).norm() / max(r.norm().item(), 1e-12)).item()
        errors = {"y": rel(yf, y), "a": rel(af, a1), "b": rel(bf, b1), "p": rel(pf, p1)}
        for name, leaf, ref in zip(("time_decay", "u", "k", "v"), leaves, (decay, u, k, v)):
            errors["grad " + name] = rel(leaf.grad, ref.grad)  # None: no dependence (T = 1)
        return errors

    worst = 0.0
    for N, T, C, fresh, seed in [(2, 9, 5, True, 0), (3, 40, 130, True, 1), (2, 17, 33, False, 2), (1, 1, 7, True, 3)]:
        errors = worst_error(N, T, C, fresh, seed, DEVICE)
        worst = max(worst, max(errors.values()))
        print(N, T, C, fresh, {k: f"{v:.1e}" for k, v in errors.items()})
    print("WORST", worst)
''')


def _run(device: str, interpret: bool) -> float:
    env = {**os.environ, **({"TRITON_INTERPRET": "1"} if interpret else {})}
    code = f"DEVICE = {device!r}\n" + CHECK
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.strip().splitlines()[-1].split()[-1])


def test_fused_kernel_equals_reference_recurrence_and_gradients_interpreted():
    # fp32 kernel against the float64 step-by-step recurrence: outputs, final state and all four gradients
    assert _run("cpu", interpret=True) <= 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_fused_kernel_equals_reference_recurrence_and_gradients_on_gpu():
    assert _run("cuda", interpret=False) <= 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_model_sequence_mode_fused_equals_chunked_on_gpu():
    from eventllm.models.rwkv import RWKV, RWKVConfig

    model = RWKV(RWKVConfig(vocab_size=300, d_model=64, n_layer=2)).randomize(0).cuda()
    idx = torch.randint(0, 300, (2, 70), generator=torch.Generator().manual_seed(0)).cuda()
    model.wkv_impl = "chunked"
    ref, state_ref = model(idx)
    model.wkv_impl = "fused"
    out, state = model(idx)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-4
    assert torch.allclose(state.wkv_p, state_ref.wkv_p, rtol=1e-4, atol=1e-4)
