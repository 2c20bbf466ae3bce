"""The RWKV-4 WKV recurrence as a fused GPU kernel (Triton), forward and backward, for training speed.

`wkv_fused(w, u, k, v, a, b, p)` computes exactly what `rwkv.wkv_step` computes token after token (and what
`rwkv.wkv_chunked` computes in parallel chunks): one program per (sequence, block of channels) walks the
tokens in order, keeping the state (a, b, p) in registers, so the sequence costs one read of k and v and
one write of the output — instead of the [B, C, L, L] weight tensors of the chunked form.

Gradients (w.r.t. w, u, k, v; the incoming state is treated as a constant and the returned state carries
no gradient, as in training from a fresh state) come from a second kernel that walks the tokens backwards.
With c_s = gy_s / den_s (den_s the denominator of output s) and G_t = Σ_{s>t} c_s e^{(s-1-t)w},
H_t = Σ_{s>t} c_s y_s e^{(s-1-t)w}, G'_t = Σ_{s>t} (s-1-t) c_s e^{(s-1-t)w} (H' likewise):
    ∂L/∂v_t = e^{k_t} G_t + c_t e^{u+k_t}
    ∂L/∂k_t = e^{k_t} (v_t G_t - H_t) + c_t e^{u+k_t} (v_t - y_t)
    ∂L/∂u   = Σ_t c_t e^{u+k_t} (v_t - y_t)
    ∂L/∂w   = Σ_t e^{k_t} (v_t G'_t - H'_t)  + the incoming state's term e^{p0} (a0 G'_{-1} - b0 H'_{-1})
    G_{t-1} = e^w G_t + c_t,   G'_{t-1} = e^w (G'_t + G_t)
All four sums are kept on one running log-scale (as the forward keeps p), so no term overflows: every
exponent e^{k_t + scale} is ≤ 1 because the forward's log-denominators bound every contribution.

Needs a CUDA device and Triton; `available()` says whether it can run. Setting TRITON_INTERPRET=1 runs the
same kernels on the CPU through Triton's interpreter (slow; the CPU test suite uses it on small shapes).
"""

from __future__ import annotations

import os

import torch

try:  # Triton ships with CUDA builds of torch; the CPU build has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def available(device: torch.device | str | None = None) -> bool:
    """Whether the fused kernel can run on `device` (a CUDA device with Triton, or Triton's interpreter)."""
    if triton is None:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    dev = torch.device(device) if device is not None else None
    return torch.cuda.is_available() and (dev is None or dev.type == "cuda")


if triton is not None:

    @triton.jit
    def _wkv_forward(w_ptr, u_ptr, k_ptr, v_ptr, a_ptr, b_ptr, p_ptr, y_ptr, lse_ptr, T, C,
                     BLOCK: tl.constexpr):
        n = tl.program_id(0)
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = c < C
        w = tl.load(w_ptr + c, mask=mask, other=0.0)
        u = tl.load(u_ptr + c, mask=mask, other=0.0)
        aa = tl.load(a_ptr + n * C + c, mask=mask, other=0.0)
        bb = tl.load(b_ptr + n * C + c, mask=mask, other=0.0)
        pp = tl.load(p_ptr + n * C + c, mask=mask, other=-1e38)
        base = n * T * C
        for t in range(T):
            off = base + t * C + c
            kt = tl.load(k_ptr + off, mask=mask, other=0.0)
            vt = tl.load(v_ptr + off, mask=mask, other=0.0)
            ww = u + kt
            q = tl.maximum(pp, ww)
            e1 = tl.exp(pp - q)
            e2 = tl.exp(ww - q)
            den = e1 * bb + e2
            tl.store(y_ptr + off, (e1 * aa + e2 * vt) / den, mask=mask)
            tl.store(lse_ptr + off, q + tl.log(den), mask=mask)
            ww = w + pp
            q = tl.maximum(ww, kt)
            e1 = tl.exp(ww - q)
            e2 = tl.exp(kt - q)
            aa = e1 * aa + e2 * vt
            bb = e1 * bb + e2
            pp = q
        tl.store(a_ptr + n * C + c, aa, mask=mask)
        tl.store(b_ptr + n * C + c, bb, mask=mask)
        tl.store(p_ptr + n * C + c, pp, mask=mask)

    @triton.jit
    def _wkv_backward(w_ptr, u_ptr, k_ptr, v_ptr, a0_ptr, b0_ptr, p0_ptr, y_ptr, lse_ptr, gy_ptr,
                      gk_ptr, gv_ptr, gw_ptr, gu_ptr, T, C, BLOCK: tl.constexpr):
        n = tl.program_id(0)
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = c < C
        w = tl.load(w_ptr + c, mask=mask, other=0.0)
        u = tl.load(u_ptr + c, mask=mask, other=0.0)
        ga = tl.zeros([BLOCK], dtype=tl.float32)  # G_t  / e^scale
        gb = tl.zeros([BLOCK], dtype=tl.float32)  # H_t  / e^scale
        ga2 = tl.zeros([BLOCK], dtype=tl.float32)  # G'_t / e^scale
        gb2 = tl.zeros([BLOCK], dtype=tl.float32)  # H'_t / e^scale
        scale = tl.full([BLOCK], -1e38, dtype=tl.float32)
        gw = tl.zeros([BLOCK], dtype=tl.float32)
        gu = tl.zeros([BLOCK], dtype=tl.float32)
        base = n * T * C
        for i in range(T):
            t = T - 1 - i
            off = base + t * C + c
            kt = tl.load(k_ptr + off, mask=mask, other=0.0)
            vt = tl.load(v_ptr + off, mask=mask, other=0.0)
            yt = tl.load(y_ptr + off, mask=mask, other=0.0)
            lse = tl.load(lse_ptr + off, mask=mask, other=0.0)
            gyt = tl.load(gy_ptr + off, mask=mask, other=0.0)
            f = tl.exp(kt + scale)  # contributions of the later outputs (s > t)
            gvt = f * ga
            gkt = f * (vt * ga - gb)
            gw += f * (vt * ga2 - gb2)
            e = tl.exp(u + kt - lse)  # the current token's bonus term in output t
            gvt += gyt * e
            d = gyt * e * (vt - yt)
            gkt += d
            gu += d
            tl.store(gk_ptr + off, gkt, mask=mask)
            tl.store(gv_ptr + off, gvt, mask=mask)
            new = tl.maximum(w + scale, -lse)
            s1 = tl.exp(w + scale - new)
            s2 = tl.exp(-lse - new)
            ga2 = s1 * (ga2 + ga)
            gb2 = s1 * (gb2 + gb)
            ga = s1 * ga + s2 * gyt
            gb = s1 * gb + s2 * gyt * yt
            scale = new
        a0 = tl.load(a0_ptr + n * C + c, mask=mask, other=0.0)
        b0 = tl.load(b0_ptr + n * C + c, mask=mask, other=0.0)
        p0 = tl.load(p0_ptr + n * C + c, mask=mask, other=-1e38)
        gw += tl.exp(p0 + scale) * (a0 * ga2 - b0 * gb2)  # the incoming state's decay (0 for a fresh state)
        tl.store(gw_ptr + n * C + c, gw, mask=mask)
        tl.store(gu_ptr + n * C + c, gu, mask=mask)


def _block(C: int) -> int:
    return min(128, triton.next_power_of_2(C))


class _WKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, u, k, v, a, b, p):
        N, T, C = k.shape
        k, v = k.contiguous(), v.contiguous()
        a0, b0, p0 = a.contiguous().clone(), b.contiguous().clone(), p.contiguous().clone()
        a1, b1, p1 = a0.clone(), b0.clone(), p0.clone()
        y = torch.empty_like(k)
        lse = torch.empty_like(k)
        grid = (N, triton.cdiv(C, _block(C)))
        _wkv_forward[grid](w, u, k, v, a1, b1, p1, y, lse, T, C, BLOCK=_block(C))
        ctx.save_for_backward(w, u, k, v, a0, b0, p0, y, lse)
        ctx.mark_non_differentiable(a1, b1, p1)
        return y, a1, b1, p1

    @staticmethod
    def backward(ctx, gy, *_):
        w, u, k, v, a0, b0, p0, y, lse = ctx.saved_tensors
        N, T, C = k.shape
        gy = gy.contiguous().float()
        gk, gv = torch.empty_like(k), torch.empty_like(v)
        gw = torch.empty(N, C, device=k.device, dtype=torch.float32)
        gu = torch.empty_like(gw)
        grid = (N, triton.cdiv(C, _block(C)))
        _wkv_backward[grid](w, u, k, v, a0, b0, p0, y, lse, gy, gk, gv, gw, gu, T, C, BLOCK=_block(C))
        return gw.sum(0), gu.sum(0), gk, gv, None, None, None


def wkv_fused(w, u, k, v, a, b, p):
    """The WKV recurrence over a sequence with the fused kernel: same arguments and results as
    `rwkv.wkv_chunked` (w = -exp(time_decay), u: [C]; k, v: [B, T, C]; a, b, p: [B, C]; all float32)."""
    if triton is None:
        raise RuntimeError("the fused WKV kernel needs Triton (a CUDA build of torch); use wkv_chunked on this machine")
    f32 = torch.float32
    return _WKV.apply(w.to(f32).contiguous(), u.to(f32).contiguous(), k.to(f32), v.to(f32), a.to(f32), b.to(f32), p.to(f32))
