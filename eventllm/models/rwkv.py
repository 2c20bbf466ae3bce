"""RWKV-4 in plain torch, with a threshold before every linear projection.

One block:  x += TimeMix(LN1(x));  x += ChannelMix(LN2(x))   (layer 0 first applies LN0 to the embedding)

TimeMix (the "attention" of RWKV):
    xk = mix(x, x_prev, time_mix_k)   (likewise xv, xr; x_prev is the previous token's LN1 output)
    k = Wk·T(xk),  v = Wv·T(xv),  r = σ(Wr·T(xr))
    wkv_t = (Σ_{i<t} e^{-(t-1-i)w + k_i} v_i + e^{u + k_t} v_t) / (same sums with v = 1)
            with w = exp(time_decay), u = time_first, kept as a running state (a, b, p) per channel
    out = Wo·T(r ⊙ wkv)
ChannelMix (the feed-forward):
    k = relu(Wk·T(xk))²,  out = σ(Wr·T(xr)) ⊙ Wv·T(k)

T(·) is the threshold function x if |x| > θ else 0 (`ActivationThreshold`), one θ per projection per layer.

Two ways to run the same weights, giving the same logits:
  * sequence mode  `model(idx[B, T], state)` runs a whole sequence; the WKV recurrence is evaluated in
    parallel chunks, on a GPU by the fused kernel of wkv_kernel.py, and on a CPU without gradients by the C
    kernel of wkv_cpu.py (for calibration, evaluation, training);
  * step mode      `model.step(token, state)` runs one token with the explicit recurrent state (for
    generation and as the reference the event-driven simulator must match).

Parameter names follow BlinkDL's RWKV-4 checkpoints (emb, blocks.N.att.key, …), so a `.pth` loads as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eventllm.errors import ConfigError
from eventllm.limits import check_memory
from eventllm.models import wkv_cpu, wkv_kernel
from eventllm.models.base import CausalLM
from eventllm.models.threshold import ActivationThreshold

# The state's running-maximum entry starts "minus infinity" (a finite value, as in BlinkDL's code, so
# that differences stay finite).
P_INIT = -1e38


@dataclass
class RWKVConfig:
    vocab_size: int = 8000
    d_model: int = 384
    n_layer: int = 6
    d_attention: int = 0  # 0: same as d_model
    d_ffn: int = 0  # 0: 4 * d_model
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layer", "d_attention", "d_ffn"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (name in ("vocab_size", "d_model", "n_layer")):
                raise ConfigError(f"RWKVConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or isinstance(self.layer_norm_eps, bool) or not 0 < self.layer_norm_eps < 1:
            raise ConfigError(f"RWKVConfig.layer_norm_eps must be a number in (0, 1), got {self.layer_norm_eps!r}")
        if self.d_attention <= 0:
            self.d_attention = self.d_model
        if self.d_ffn <= 0:
            self.d_ffn = 4 * self.d_model
        check_memory(4 * self.n_parameters(), f"an RWKV-4 of {self.n_layer} layers x {self.d_model} (vocabulary {self.vocab_size})",
                     "use a smaller config")

    def n_parameters(self) -> int:
        """Parameters of the model this config describes (counted before building it)."""
        d, da, df = self.d_model, self.d_attention, self.d_ffn
        return 2 * self.vocab_size * d + self.n_layer * (4 * d * da + 2 * d * df + d * d + 12 * d)


@dataclass
class RWKVState:
    """The recurrent state of every layer, each tensor [n_layer, batch, channels]."""

    att_shift: torch.Tensor  # previous token's LN1 output (token shift of TimeMix)
    wkv_a: torch.Tensor  # numerator of the WKV average, scaled by e^-p
    wkv_b: torch.Tensor  # denominator, scaled by e^-p
    wkv_p: torch.Tensor  # running log-scale
    ffn_shift: torch.Tensor  # previous token's LN2 output (token shift of ChannelMix)

    def clone(self) -> "RWKVState":
        return RWKVState(*(t.clone() for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.att_shift, self.wkv_a, self.wkv_b, self.wkv_p, self.ffn_shift)

    def detach(self) -> "RWKVState":
        return RWKVState(*(t.detach() for t in self.tensors()))


def wkv_step(w, u, k, v, a, b, p):
    """One token of the WKV recurrence. w = -exp(time_decay); k, v, a, b, p: [B, C]. Returns wkv, a, b, p."""
    ww = u + k
    q = torch.maximum(p, ww)
    e1 = torch.exp(p - q)
    e2 = torch.exp(ww - q)
    wkv = (e1 * a + e2 * v) / (e1 * b + e2)
    ww = w + p
    q = torch.maximum(ww, k)
    e1 = torch.exp(ww - q)
    e2 = torch.exp(k - q)
    return wkv, e1 * a + e2 * v, e1 * b + e2, q


def wkv_chunked(w, u, k, v, a, b, p, chunk: int = 32):
    """The WKV recurrence over a sequence, `chunk` tokens at a time in parallel.

    Within a chunk every output is a weighted average over the chunk's earlier tokens, the current token
    and the carried state; all weights are formed in log space and shifted by their maximum, as the
    one-step recurrence does, so the result matches `wkv_step` to float rounding.
    w = -exp(time_decay), u: [C]; k, v: [B, T, C] (float32); a, b, p: [B, C]. Returns wkv [B, T, C], a, b, p.
    """
    B, T, C = k.shape
    out = []
    for s in range(0, T, chunk):
        kc = k[:, s : s + chunk].transpose(1, 2)  # [B, C, L]
        vc = v[:, s : s + chunk].transpose(1, 2)
        L = kc.shape[-1]
        t = torch.arange(L, device=k.device)
        steps_back = (t[:, None] - 1 - t[None, :]).to(k.dtype)  # [L(out), L(in)]: decay steps from i to t
        wc = w[None, :, None, None]
        logw = steps_back * wc + kc[:, :, None, :]  # weight of token i in the output at t (i < t)
        diag = (u[None, :, None] + kc)[..., None]  # the current token gets the bonus u instead of decay
        eye = torch.eye(L, dtype=torch.bool, device=k.device)
        below = torch.tril(torch.ones(L, L, dtype=torch.bool, device=k.device), -1)
        logw = torch.where(eye, diag.expand_as(logw), logw)
        logw = torch.where(below | eye, logw, torch.full((), float("-inf"), device=k.device, dtype=k.dtype))
        log_state = p[:, :, None] + t.to(k.dtype) * w[None, :, None]  # carried state, decayed t steps
        m = torch.maximum(logw.amax(-1), log_state)  # [B, C, L]
        e = torch.exp(logw - m[..., None])
        es = torch.exp(log_state - m)
        num = (e * vc[:, :, None, :]).sum(-1) + es * a[:, :, None]
        den = e.sum(-1) + es * b[:, :, None]
        out.append((num / den).transpose(1, 2))
        # state after the chunk: every token decayed to the chunk's end, plus the old state decayed L steps
        log_in = (L - 1 - t).to(k.dtype) * w[None, :, None] + kc  # [B, C, L]
        log_old = p + L * w[None, :]
        p_new = torch.maximum(log_in.amax(-1), log_old)
        e_in = torch.exp(log_in - p_new[..., None])
        e_old = torch.exp(log_old - p_new)
        a = e_old * a + (e_in * vc).sum(-1)
        b = e_old * b + e_in.sum(-1)
        p = p_new
    return torch.cat(out, dim=1), a, b, p


def token_shift(x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The previous token's vector at every position: [prev, x_0, …, x_{T-2}]."""
    return torch.cat([prev[:, None, :], x[:, :-1]], dim=1)


def mix(x: torch.Tensor, shifted: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return x * ratio + shifted * (1 - ratio)


class TimeMix(nn.Module):
    def __init__(self, cfg: RWKVConfig, layer: int):
        super().__init__()
        C, A = cfg.d_model, cfg.d_attention
        self.time_decay = nn.Parameter(torch.zeros(A))
        self.time_first = nn.Parameter(torch.zeros(A))
        self.time_mix_k = nn.Parameter(torch.zeros(C))
        self.time_mix_v = nn.Parameter(torch.zeros(C))
        self.time_mix_r = nn.Parameter(torch.zeros(C))
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.receptance = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)
        self.key_in = ActivationThreshold(layer, "att.key")
        self.value_in = ActivationThreshold(layer, "att.value")
        self.receptance_in = ActivationThreshold(layer, "att.receptance")
        self.output_in = ActivationThreshold(layer, "att.output")

    def forward(self, x, shift, a, b, p, wkv_chunk: int, wkv_impl: str = "auto"):
        shifted = token_shift(x, shift)
        k = self.key(self.key_in(mix(x, shifted, self.time_mix_k)))
        v = self.value(self.value_in(mix(x, shifted, self.time_mix_v)))
        r = torch.sigmoid(self.receptance(self.receptance_in(mix(x, shifted, self.time_mix_r))))
        w = -torch.exp(self.time_decay.float())
        u = self.time_first.float()
        if x.shape[1] == 1:
            wkv, a, b, p = wkv_step(w, u, k[:, 0].float(), v[:, 0].float(), a, b, p)
            wkv = wkv[:, None]
        elif wkv_impl == "fused" or (wkv_impl == "auto" and wkv_kernel.available(k.device)):
            wkv, a, b, p = wkv_kernel.wkv_fused(w, u, k.float(), v.float(), a, b, p)
        elif wkv_impl == "cpu" or (wkv_impl == "auto" and k.device.type == "cpu" and not wkv_cpu.needs_grad(k, v, w, u)
                                   and wkv_cpu.available()):
            wkv, a, b, p = wkv_cpu.wkv_cpu(w, u, k, v, a, b, p)
        else:
            wkv, a, b, p = wkv_chunked(w, u, k.float(), v.float(), a, b, p, chunk=wkv_chunk)
        out = self.output(self.output_in(r * wkv.to(r.dtype)))
        return out, x[:, -1], a, b, p


class ChannelMix(nn.Module):
    def __init__(self, cfg: RWKVConfig, layer: int):
        super().__init__()
        C, H = cfg.d_model, cfg.d_ffn
        self.time_mix_k = nn.Parameter(torch.zeros(C))
        self.time_mix_r = nn.Parameter(torch.zeros(C))
        self.key = nn.Linear(C, H, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(H, C, bias=False)
        self.key_in = ActivationThreshold(layer, "ffn.key")
        self.receptance_in = ActivationThreshold(layer, "ffn.receptance")
        self.value_in = ActivationThreshold(layer, "ffn.value")

    def forward(self, x, shift):
        shifted = token_shift(x, shift)
        k = torch.square(torch.relu(self.key(self.key_in(mix(x, shifted, self.time_mix_k)))))
        r = torch.sigmoid(self.receptance(self.receptance_in(mix(x, shifted, self.time_mix_r))))
        return r * self.value(self.value_in(k)), x[:, -1]


class Block(nn.Module):
    """One RWKV layer: LayerNorms (ln0 on layer 0's input too), time mixing and channel mixing — RWKV-4's by default,
    RWKV-7's given its mixing classes (the same names, so BlinkDL's keys fit both)."""

    def __init__(self, cfg, layer: int, time_mix: type = TimeMix, channel_mix: type = ChannelMix):
        super().__init__()
        if layer == 0:
            self.ln0 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.att = time_mix(cfg, layer)
        self.ffn = channel_mix(cfg, layer)


class RWKV(CausalLM):
    """RWKV-4 language model; `forward(idx[B, T], state=None) -> (logits[B, T, vocab], state)`."""

    arch = "rwkv4"
    recurrent = True
    PROJECTIONS = ("att.key", "att.value", "att.receptance", "att.output", "ffn.key", "ffn.receptance", "ffn.value")

    hf_model_type = "rwkv"

    @classmethod
    def config_from_hf(cls, hf: dict) -> RWKVConfig:
        return RWKVConfig(
            vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layer=hf["num_hidden_layers"],
            d_attention=hf.get("attention_hidden_size") or 0, d_ffn=hf.get("intermediate_size") or 0,
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        )

    @classmethod
    def tensors_from_hf(cls, tensors):
        return {_from_hf_name(k): (v.reshape(-1) if "time_" in k else v) for k, v in tensors.items()}

    def to_hf(self):
        """The same weights as a transformers RwkvForCausalLM."""
        from transformers import RwkvConfig, RwkvForCausalLM

        c = self.config
        hf = RwkvForCausalLM(RwkvConfig(
            vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer,
            attention_hidden_size=c.d_attention, intermediate_size=c.d_ffn, layer_norm_epsilon=c.layer_norm_eps,
            rescale_every=0, tie_word_embeddings=False,
        ))
        sd = {_to_hf_name(k): (v.reshape(1, 1, -1) if "time_mix" in k else v) for k, v in self.state_dict().items()}
        hf.load_state_dict(sd, strict=True)
        return hf

    def __init__(self, config: RWKVConfig, wkv_chunk: int = 32):
        super().__init__()
        self.config = config
        self.wkv_chunk = wkv_chunk
        # sequence mode: "fused" (the GPU kernel, wkv_kernel.py), "cpu" (the C kernel, wkv_cpu.py, forward only),
        # "chunked" (plain torch) or "auto" (fused on CUDA; on the CPU the C kernel where no gradient is needed)
        self.wkv_impl = "auto"
        self.dropout = 0.0  # on the block outputs, in training only
        self.emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head_in = ActivationThreshold(config.n_layer, "head")  # used when `head_threshold` is on

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        C, A, H = self.config.d_model, self.config.d_attention, self.config.d_ffn
        return {
            "att.key": (C, A), "att.value": (C, A), "att.receptance": (C, A), "att.output": (A, C),
            "ffn.key": (C, H), "ffn.receptance": (C, C), "ffn.value": (H, C),
        }

    def projection_linears(self):
        out = {}
        for i, block in enumerate(self.blocks):
            for proj in self.PROJECTIONS:
                part, name = proj.split(".")
                out[(i, proj)] = [getattr(getattr(block, part), name)]
        out[(None, "head")] = [self.head]
        return out

    def init_state(self, batch: int = 1) -> RWKVState:
        cfg = self.config
        dev = self.emb.weight.device
        dtype = self.emb.weight.dtype
        L = cfg.n_layer
        return RWKVState(
            att_shift=torch.zeros(L, batch, cfg.d_model, device=dev, dtype=dtype),
            wkv_a=torch.zeros(L, batch, cfg.d_attention, device=dev),
            wkv_b=torch.zeros(L, batch, cfg.d_attention, device=dev),
            wkv_p=torch.full((L, batch, cfg.d_attention), P_INIT, device=dev),
            ffn_shift=torch.zeros(L, batch, cfg.d_model, device=dev, dtype=dtype),
        )

    def forward(self, idx: torch.Tensor, state: RWKVState | None = None):
        if state is None:
            state = self.init_state(idx.shape[0])
        x, new = self._blocks(self.emb(idx), state, 0, self.config.n_layer)
        logits = self._head(x)
        return logits, RWKVState(*(torch.stack(t) for t in new))

    def _blocks(self, x: torch.Tensor, state: RWKVState, start: int, stop: int):
        """Blocks start…stop-1 on the residual stream x (for start = 0: the embedding); returns x and the new
        per-layer state lists."""
        new = [[] for _ in range(5)]
        for i in range(start, stop):
            block = self.blocks[i]
            if i == 0:
                x = block.ln0(x)
            xa = block.ln1(x)
            att, shift, a, b, p = block.att(xa, state.att_shift[i], state.wkv_a[i], state.wkv_b[i], state.wkv_p[i], self.wkv_chunk, self.wkv_impl)
            x = x + F.dropout(att, self.dropout, self.training)
            ffn, fshift = block.ffn(block.ln2(x), state.ffn_shift[i])
            x = x + F.dropout(ffn, self.dropout, self.training)
            for lst, t in zip(new, (shift, a, b, p, fshift)):
                lst.append(t)
        return x, new

    def residual_before(self, idx: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual stream entering block `layer` for a sequence run from a fresh state (calibration caches
        it: the layers before the one being searched do not change)."""
        x, _ = self._blocks(self.emb(idx), self.init_state(idx.shape[0]), 0, layer)
        return x

    def logits_from(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The logits of a sequence whose residual stream entering block `layer` is x (fresh state): with
        x = residual_before(idx, layer), exactly the logits of `forward(idx)`."""
        x, _ = self._blocks(x, self.init_state(x.shape[0]), layer, self.config.n_layer)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_out(x)
        return self.head(self.head_in(h) if self.head_threshold else h)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> "RWKV":
        """RWKV-4's own initialisation (as in BlinkDL's training code), deterministic for a seed."""
        g = torch.Generator().manual_seed(seed)
        cfg = self.config
        L = cfg.n_layer
        # zero-initialised so that every block starts as (nearly) the identity on the residual stream
        zero = (".att.key.", ".att.receptance.", ".att.output.", ".ffn.value.", ".ffn.receptance.")
        for name, p in self.named_parameters():
            if p.dim() != 2:
                continue
            if name == "emb.weight":
                p.uniform_(-1e-4, 1e-4, generator=g)
            elif any(z in name for z in zero):
                p.zero_()
            else:
                gain = max(1.0, (p.shape[0] / p.shape[1]) ** 0.5) * (0.5 if name == "head.weight" else 1.0)
                nn.init.orthogonal_(p, gain=gain, generator=g)
        for i, block in enumerate(self.blocks):
            r01 = i / max(1, L - 1)
            r10 = 1.0 - i / L
            ddd = torch.arange(cfg.d_model, dtype=torch.float32) / cfg.d_model
            h = torch.arange(cfg.d_attention, dtype=torch.float32) / max(1, cfg.d_attention - 1)
            block.att.time_decay.copy_(-5 + 8 * h ** (0.7 + 1.3 * r01))
            zigzag = torch.tensor([(j + 1) % 3 - 1 for j in range(cfg.d_attention)], dtype=torch.float32) * 0.5
            block.att.time_first.copy_(torch.full((cfg.d_attention,), torch.log(torch.tensor(0.3)).item()) + zigzag)
            block.att.time_mix_k.copy_(ddd ** r10)
            block.att.time_mix_v.copy_(ddd ** r10 + 0.3 * r01)
            block.att.time_mix_r.copy_(ddd ** (0.5 * r10))
            block.ffn.time_mix_k.copy_(ddd ** r10)
            block.ffn.time_mix_r.copy_(ddd ** r10)
        return self

    @torch.no_grad()
    def randomize(self, seed: int = 0, scale: float = 0.5) -> "RWKV":
        """Random weights with every part active (no zero matrices): for tests that compare implementations."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if "time_mix" in name:
                p.uniform_(0.0, 1.0, generator=g)
            elif "time_decay" in name:
                p.uniform_(-3.0, 1.5, generator=g)
            elif "time_first" in name:
                p.uniform_(-1.0, 1.0, generator=g)
            elif name.split(".")[-2].startswith("ln") and name.endswith(".weight"):
                p.uniform_(0.5, 1.5, generator=g)
            elif name.endswith("bias"):
                p.uniform_(-0.2, 0.2, generator=g)
            else:
                p.normal_(0.0, scale / p.shape[-1] ** 0.5 if p.dim() == 2 and name != "emb.weight" else 1.0, generator=g)
        return self


# Hugging Face RWKV parameter names ↔ BlinkDL's (which this model uses)
def _from_hf_name(key: str) -> str:
    key = key.removeprefix("rwkv.")
    for hf, ours in ((".pre_ln.", ".ln0."), (".attention.", ".att."), (".feed_forward.", ".ffn.")):
        key = key.replace(hf, ours)
    key = key.replace("embeddings.", "emb.", 1) if key.startswith("embeddings.") else key
    for hf, ours in (("time_mix_key", "time_mix_k"), ("time_mix_value", "time_mix_v"), ("time_mix_receptance", "time_mix_r")):
        key = key.replace(hf, ours)
    return key


def _to_hf_name(key: str) -> str:
    if key == "head.weight":
        return key
    for ours, hf in (("time_mix_k", "time_mix_key"), ("time_mix_v", "time_mix_value"), ("time_mix_r", "time_mix_receptance")):
        key = key.replace(ours, hf)
    for ours, hf in ((".ln0.", ".pre_ln."), (".att.", ".attention."), (".ffn.", ".feed_forward.")):
        key = key.replace(ours, hf)
    key = "embeddings." + key[len("emb."):] if key.startswith("emb.") else key
    return "rwkv." + key
