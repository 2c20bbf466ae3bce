"""The WKV-7 recurrence of RWKV-7, token by token (`wkv7_scan`) or chunk by chunk with matrix products
(`wkv7_chunked`, the same numbers to float rounding, in plain torch: batched matmuls and one triangular solve per
chunk, which suit a GPU; no fla or Triton needed). `wkv7` picks the faster for a sequence length.

Per head, the state S [N values × N keys] and, with b = κ ⊙ a:
    S_t = S_{t−1} (diag(w_t) − κ_t b_tᵀ) + v_t k_tᵀ,    y_t = S_t r_t

Chunked (the generalised delta rule's chunk form, as the fla library's DPLR kernels; written here for our
layout). In a chunk of L tokens from state S₀, let γ_t = w_1 ⊙ … ⊙ w_t (γ_0 = 1) and u_t = S_{t−1} (−κ_t), the
delta rule's correction. Dividing the keys' axis by γ_t makes the update a plain sum:
    S_t diag(1/γ_t) = S₀ + Σ_{τ≤t} (u_τ (b_τ/γ_τ)ᵀ + v_τ (k_τ/γ_τ)ᵀ)
so with ǎ_t = −κ_t ⊙ γ_{t−1}, b̂ = b/γ, k̂ = k/γ, r̃ = r ⊙ γ (rows over the chunk's tokens):
    U = Ǎ S₀ᵀ + tril₋₁(Ǎ B̂ᵀ) U + tril₋₁(Ǎ K̂ᵀ) V     →  U = W S₀ᵀ + Z  (one unit-triangular solve)
    Y = R̃ S₀ᵀ + tril(R̃ B̂ᵀ) U + tril(R̃ K̂ᵀ) V       =  Q S₀ᵀ + Y_in
    S_L = S₀ (diag(γ_L) + Wᵀ B̄) + Zᵀ B̄ + Vᵀ K̄,  B̄ = b ⊙ γ_L/γ, K̄ = k ⊙ γ_L/γ
Everything but the last line's chain over chunks runs for all chunks at once. 1/γ grows as e^(L·max(−log w));
RWKV-7's decay keeps −log w ≤ e^−½ (`DECAY_SCALE`), so chunks up to 128 tokens stay far inside float32's range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eventllm.errors import ConfigError

CHUNK = 32  # tokens per chunk: 1/γ ≤ e^(32·e^−½) ≈ 3e8 for RWKV-7's decay
CHUNKED_FROM = 4  # the sequence length from which the chunked form is the faster on a CPU (benchmarks/wkv7_chunk.py)


def wkv7_scan(S, r, w, k, v, kappa, a):
    """The WKV-7 recurrence token by token. S: [B, H, N, N]; r, w, k, v, κ, a: [B, T, H, N] (float32).
    Returns y [B, T, H, N] and the final state."""
    ys = []
    for t in range(r.shape[1]):
        # S ← S·diag(w) - (S·κ)(κ ⊙ a)ᵀ + v kᵀ;  y = S·r
        sk = torch.einsum("bhij,bhj->bhi", S, kappa[:, t])
        S = (S * w[:, t, :, None, :] - sk[..., None] * (kappa[:, t] * a[:, t])[:, :, None, :]
             + v[:, t, :, :, None] * k[:, t, :, None, :])
        ys.append(torch.einsum("bhij,bhj->bhi", S, r[:, t]))
    return torch.stack(ys, 1), S


def wkv7_chunked(S, r, w, k, v, kappa, a, chunk: int = CHUNK):
    """`wkv7_scan` computed chunk by chunk (see the module docstring): y [B, T, H, N] and the final state. Any T:
    the last chunk is padded with tokens that leave the state as it is (w = 1, κ = k = v = 0). Runs in float32
    under autocast too (the 1/γ scaling needs float32's range and precision)."""
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"wkv7_chunked: `chunk` must be a positive number of tokens, got {chunk!r}")
    with torch.autocast(device_type=r.device.type, enabled=False):
        return _chunked(*(x.float() for x in (S, r, w, k, v, kappa, a)), chunk)


def _chunked(S, r, w, k, v, kappa, a, chunk: int):
    B, T, H, N = r.shape
    n = -(-T // chunk)
    pad = n * chunk - T

    def chunks(x):  # [B, T, H, N] → [B, H, n, L, N], zeros after the end
        return F.pad(x, (0, 0, 0, 0, 0, pad)).view(B, n, chunk, H, N).permute(0, 3, 1, 2, 4)

    log_w = chunks(torch.log(w))  # padded with log 1 = 0
    G = log_w.cumsum(-2)  # log γ_t
    r, k, v, kappa, a = (chunks(x) for x in (r, k, v, kappa, a))
    b = kappa * a
    inv = torch.exp(-G)
    r_t, a_c, b_h, k_h = r * G.exp(), -kappa * torch.exp(G - log_w), b * inv, k * inv
    strict = torch.ones(chunk, chunk, dtype=torch.bool, device=r.device).tril(-1)
    incl = strict | torch.eye(chunk, dtype=torch.bool, device=r.device)
    T_ab = (a_c @ b_h.transpose(-1, -2)).masked_fill(~strict, 0.0)
    T_ak = (a_c @ k_h.transpose(-1, -2)).masked_fill(~strict, 0.0)
    T_rb = (r_t @ b_h.transpose(-1, -2)).masked_fill(~incl, 0.0)
    T_rk = (r_t @ k_h.transpose(-1, -2)).masked_fill(~incl, 0.0)
    eye = torch.eye(chunk, dtype=r.dtype, device=r.device)
    WZ = torch.linalg.solve_triangular(eye - T_ab, torch.cat([a_c, T_ak @ v], -1), upper=False, unitriangular=True)
    W, Z = WZ[..., :N], WZ[..., N:]
    Q = r_t + T_rb @ W  # y = Q S₀ᵀ + y_in
    y_in = T_rb @ Z + T_rk @ v
    to_end = torch.exp(G[..., -1:, :] - G)
    b_e, k_e = b * to_end, k * to_end
    carry = torch.diag_embed(G[..., -1, :].exp()) + W.transpose(-1, -2) @ b_e  # S_L = S₀ carry + add
    add = Z.transpose(-1, -2) @ b_e + v.transpose(-1, -2) @ k_e
    starts = []
    for c in range(n):
        starts.append(S)
        S = S @ carry[:, :, c] + add[:, :, c]
    y = Q @ torch.stack(starts, 2).transpose(-1, -2) + y_in  # [B, H, n, L, N]
    return y.permute(0, 2, 3, 1, 4).reshape(B, n * chunk, H, N)[:, :T], S


def wkv7(S, r, w, k, v, kappa, a):
    """The WKV-7 recurrence by the faster form for this length: chunked (chunks of `CHUNK` tokens, or one of T
    where shorter) from `CHUNKED_FROM` tokens on, else the scan."""
    T = r.shape[1]
    if T >= CHUNKED_FROM:
        return wkv7_chunked(S, r, w, k, v, kappa, a, chunk=min(CHUNK, T))
    return wkv7_scan(S, r, w, k, v, kappa, a)
