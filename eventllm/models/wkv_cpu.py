"""The RWKV-4 WKV recurrence as a small C kernel for the CPU, forward only (calibration, evaluation).

On a CPU the chunked form (`rwkv.wkv_chunked`) spends most of a forward pass forming and exponentiating its
[B, C, L, L] weight tensors: O(T·L·C) exponentials for O(T·C) work. This kernel walks the tokens in order,
exactly as `rwkv.wkv_step` does (the same formulas, float32), keeping the state of each channel in registers:
four exponentials per token and channel, the channel loop vectorised.

It is C source compiled once on first use with the system C compiler (`cc`, or $CC) into
~/.cache/eventllm/kernels/ (keyed by the source's hash; written to a temporary file, then renamed), and called
through ctypes. `available()` says whether it could be built; without a compiler the chunked form runs, as
before. It takes no part in autograd: a forward that needs gradients (training) runs the chunked form.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#ifdef USE_MVEC  /* glibc's libmvec has vector variants of expf; declaring them lets the channel loop use them */
float expf(float) __attribute__((simd("notinbranch")));
#endif

/* y[n, t, c] = WKV output; a, b, p: [N, C] state, updated in place. Same formulas as rwkv.wkv_step. */
void wkv_forward(int64_t N, int64_t T, int64_t C, const float *w, const float *u, const float *k,
                 const float *v, float *a, float *b, float *p, float *y) {
    for (int64_t n = 0; n < N; n++) {
        for (int64_t c0 = 0; c0 < C; c0 += 64) {
            int64_t c1 = c0 + 64 < C ? c0 + 64 : C;
            float aa[64], bb[64], pp[64];
            for (int64_t c = c0; c < c1; c++) {
                aa[c - c0] = a[n * C + c]; bb[c - c0] = b[n * C + c]; pp[c - c0] = p[n * C + c];
            }
            for (int64_t t = 0; t < T; t++) {
                const float *kt = k + (n * T + t) * C, *vt = v + (n * T + t) * C;
                float *yt = y + (n * T + t) * C;
                #pragma omp simd
                for (int64_t c = c0; c < c1; c++) {
                    int64_t i = c - c0;
                    float kk = kt[c], vv = vt[c];
                    float ww = u[c] + kk;
                    float q = pp[i] > ww ? pp[i] : ww;
                    float e1 = expf(pp[i] - q), e2 = expf(ww - q);
                    yt[c] = (e1 * aa[i] + e2 * vv) / (e1 * bb[i] + e2);
                    ww = w[c] + pp[i];
                    q = ww > kk ? ww : kk;
                    e1 = expf(ww - q); e2 = expf(kk - q);
                    aa[i] = e1 * aa[i] + e2 * vv;
                    bb[i] = e1 * bb[i] + e2;
                    pp[i] = q;
                }
            }
            for (int64_t c = c0; c < c1; c++) {
                a[n * C + c] = aa[c - c0]; b[n * C + c] = bb[c - c0]; p[n * C + c] = pp[c - c0];
            }
        }
    }
}
"""

# No -ffast-math: IEEE semantics (and -1e38 as "minus infinity") hold as in torch. The vector expf of glibc's
# libmvec (-lmvec) is used where it links; each later variant drops what the compiler or libc may lack.
# One thread: a second OpenMP runtime beside torch's would spin against it (and the kernel is a small part
# of a forward pass once it no longer forms the chunked weights); -fopenmp-simd only vectorises the loop.
_BASE = ["-O3", "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC"]
_VARIANTS = (["-march=native", "-DUSE_MVEC", "-lmvec"], ["-DUSE_MVEC", "-lmvec"], ["-march=native"], [])

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def _cache_dir() -> Path:
    return Path(os.environ.get("EVENTLLM_CACHE", Path.home() / ".cache" / "eventllm")) / "kernels"


def _cpu_id() -> str:
    """What a -march=native build depends on: the CPU's feature flags (a cache folder shared by several machines
    must not hand one CPU's build to another)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), platform.machine())
    except OSError:
        return platform.machine() + platform.processor()


def _compile() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise OSError("no C compiler (cc) on PATH")
    key = hashlib.sha256((_SOURCE + repr((_BASE, _VARIANTS)) + cc + _cpu_id()).encode()).hexdigest()[:16]
    out = _cache_dir() / f"wkv_cpu_{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            src = Path(tmp) / "wkv.c"
            src.write_text(_SOURCE)
            lib = Path(tmp) / "wkv.so"
            for extra in _VARIANTS:
                flags = [f for f in extra if not f.startswith("-l")]
                libs = [f for f in extra if f.startswith("-l")]
                r = subprocess.run([cc, *_BASE, *flags, str(src), "-o", str(lib), *libs, "-lm"], capture_output=True, text=True)
                if r.returncode == 0:
                    break
            else:
                raise OSError(f"{cc} could not build the WKV kernel: {r.stderr.strip()[:300]}")
            os.replace(lib, out)
    dll = ctypes.CDLL(str(out))
    f = dll.wkv_forward
    f.restype = None
    f.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 8
    return dll


def available() -> bool:
    """Whether the CPU kernel is built (building it on first call); False when no C compiler can build it."""
    global _lib, _failed
    if _lib is not None:
        return True
    if _failed is not None or os.environ.get("EVENTLLM_WKV_CPU") == "0":
        return False
    with _lock:
        if _lib is None and _failed is None:
            try:
                _lib = _compile()
            except OSError as e:
                _failed = str(e)
    return _lib is not None


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd would need gradients through these tensors (the kernel cannot give them)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def wkv_cpu(w, u, k, v, a, b, p):
    """The WKV recurrence over a sequence on the CPU: the same inputs and outputs as `rwkv.wkv_chunked`
    (w = -exp(time_decay), u: [C]; k, v: [B, T, C]; a, b, p: [B, C]; float32). Returns wkv [B, T, C], a, b, p."""
    if not available():
        raise RuntimeError(f"the CPU WKV kernel is not available ({_failed}); use wkv_chunked")
    if any(t.device.type != "cpu" for t in (w, u, k, v, a, b, p)):
        raise RuntimeError("the CPU WKV kernel takes CPU tensors; on a GPU use wkv_kernel.wkv_fused")
    if needs_grad(w, u, k, v):
        raise RuntimeError("the CPU WKV kernel has no backward pass; run under torch.no_grad() or use wkv_chunked")
    B, T, C = k.shape
    f32 = torch.float32
    w, u = w.detach().to(f32).contiguous(), u.detach().to(f32).contiguous()
    k, v = k.detach().to(f32).contiguous(), v.detach().to(f32).contiguous()
    a, b, p = (t.detach().to(f32).clone().contiguous() for t in (a, b, p))
    y = torch.empty((B, T, C), dtype=f32)
    _lib.wkv_forward(B, T, C, *(t.data_ptr() for t in (w, u, k, v, a, b, p, y)))
    return y, a, b, p
