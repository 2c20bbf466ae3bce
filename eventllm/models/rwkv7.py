"""RWKV-7 ("Goose", BlinkDL's x070) in plain torch, with a threshold before every linear projection.

One block:  x += TimeMix(LN1(x));  x += ChannelMix(LN2(x))   (layer 0 first applies LN0 to the embedding)

TimeMix, per token, with d = x_prev - x (token shift; x_prev is the previous token's LN1 output):
    xr = x + d·x_r   (likewise xw, xk, xv, xa, xg, each with its own mix)
    r = Wr·T(xr),  k = Wk·T(xk),  v = Wv·T(xv)
    w = exp(-e^-½ · σ(w0 + W_w2·T(tanh(W_w1·T(xw)))))       data-dependent decay in (e^-e^-½, 1), per channel
    a = σ(a0 + W_a2·T(W_a1·T(xa)))                             in-context learning rate
    g = W_g2·T(σ(W_g1·T(xg)))                                  output gate
    κ = normalize_per_head(k ⊙ k_k);  k ← k ⊙ (1 + (a - 1) ⊙ k_a)
    v ← v + (v_first - v) ⊙ σ(v0 + W_v2·T(W_v1·T(xv)))        value residual (layer 0: v_first = v, no LoRA)
    per head h (N channels), the state S [N values × N keys], updated by the generalised delta rule:
        S ← S·diag(w) - (S·κ)(κ ⊙ a)ᵀ + v kᵀ,    y = S·r
    o = GroupNorm_heads(y) + (Σ_head r ⊙ k ⊙ r_k) · v          (the "bonus" of the current token)
    out = Wo·T(o ⊙ g)
ChannelMix:
    xk = x + (x_prev - x)·x_k;  k = relu(Wk·T(xk))²;  out = Wv·T(k)

T(·) is the threshold x if |x| > θ else 0 (`ActivationThreshold`), one θ per projection per layer; the LoRA
matrices are projections like the others (their down and up halves each have a site). Layer 0 has no
value-residual LoRA (BlinkDL's checkpoints carry its v0/v1/v2, which nothing reads), so it has no sites there.

Sequence mode `model(idx[B, T], state)` and step mode `model.step(token, state)` run the same code: the WKV
recurrence token by token (`eventllm.models.wkv7.wkv7_scan`) or, from a few tokens on, chunk by chunk with matrix
products (`wkv7_chunked`, the same numbers to float rounding, faster on a CPU and suited to a GPU).

Parameter names follow BlinkDL's x070 checkpoints (emb, blocks.N.att.x_r, att.w1, …); a LoRA matrix `att.w1`
[C, D] of the file is the Linear `att.w1.weight` [D, C] here (transposed), the mixes [1, 1, C] are vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eventllm.errors import ConfigError
from eventllm.limits import check_memory
from eventllm.models.base import CausalLM
from eventllm.models.rwkv import Block, token_shift
from eventllm.models.threshold import ActivationThreshold
from eventllm.models.wkv7 import wkv7

DECAY_SCALE = math.exp(-0.5)  # log w = -e^-½ σ(·): every channel forgets at least a little, at most 1 - e^-e^-½
GROUP_NORM_EPS_PER_CHANNEL = 1e-5  # BlinkDL's ln_x: eps = 1e-5 · head_size_divisor² = 64e-5 at 8


def lora_rank(c: int, factor: float, power: float) -> int:
    """BlinkDL's default LoRA rank for width c: factor · c^power rounded to a multiple of 32, at least 32."""
    return max(32, int(round(factor * c ** power / 32) * 32))


@dataclass
class RWKV7Config:
    vocab_size: int = 8000
    d_model: int = 384
    n_layer: int = 6
    head_size: int = 64
    d_ffn: int = 0  # 0: 4 * d_model
    d_decay: int = 0  # LoRA ranks; 0: BlinkDL's defaults for d_model
    d_iclr: int = 0
    d_value: int = 0
    d_gate: int = 0
    layer_norm_eps: float = 1e-5
    group_norm_eps: float = 64e-5

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layer", "head_size", "d_ffn", "d_decay", "d_iclr", "d_value", "d_gate"):
            value = getattr(self, name)
            positive = name in ("vocab_size", "d_model", "n_layer", "head_size")
            if not isinstance(value, int) or isinstance(value, bool) or value < positive:
                raise ConfigError(f"RWKV7Config.{name} must be a positive integer, got {value!r}")
        for name in ("layer_norm_eps", "group_norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
                raise ConfigError(f"RWKV7Config.{name} must be a number in (0, 1), got {value!r}")
        if self.d_model % self.head_size:
            raise ConfigError(f"RWKV7Config: d_model {self.d_model} is not a multiple of head_size {self.head_size}; "
                              "choose a head size that divides the width")
        c = self.d_model
        self.d_ffn = self.d_ffn or 4 * c
        self.d_decay = self.d_decay or lora_rank(c, 1.8, 0.5)
        self.d_iclr = self.d_iclr or lora_rank(c, 1.8, 0.5)
        self.d_value = self.d_value or lora_rank(c, 1.3, 0.5)
        self.d_gate = self.d_gate or lora_rank(c, 0.6, 0.8)
        check_memory(4 * self.n_parameters(), f"an RWKV-7 of {self.n_layer} layers x {self.d_model} (vocabulary {self.vocab_size})",
                     "use a smaller config")

    @property
    def n_head(self) -> int:
        return self.d_model // self.head_size

    def n_parameters(self) -> int:
        """Parameters of a BlinkDL checkpoint of this config (counted before building it; the model itself leaves
        out layer 0's v0/v1/v2, which nothing reads)."""
        c = self.d_model
        lora = 2 * c * (self.d_decay + self.d_iclr + self.d_value + self.d_gate)
        per_layer = 4 * c * c + 2 * c * self.d_ffn + lora + 19 * c
        return 2 * self.vocab_size * c + self.n_layer * per_layer + 4 * c


@dataclass
class RWKV7State:
    """The recurrent state of every layer: token shifts [n_layer, batch, C], WKV [n_layer, batch, H, N, N]."""

    att_shift: torch.Tensor  # previous token's LN1 output (token shift of TimeMix)
    wkv: torch.Tensor  # per head: S[value channel, key channel]
    ffn_shift: torch.Tensor  # previous token's LN2 output (token shift of ChannelMix)

    def clone(self) -> "RWKV7State":
        return RWKV7State(*(t.clone() for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.att_shift, self.wkv, self.ffn_shift)

    def detach(self) -> "RWKV7State":
        return RWKV7State(*(t.detach() for t in self.tensors()))


# the function between a LoRA's two halves: decay, in-context learning rate, value residual, gate
LORA_INNER = {"w": torch.tanh, "a": lambda h: h, "v": lambda h: h, "g": torch.sigmoid}


class TimeMix(nn.Module):
    # token-shift mixes, in BlinkDL's order
    MIXES = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")

    def __init__(self, cfg: RWKV7Config, layer: int):
        super().__init__()
        C, H, N = cfg.d_model, cfg.n_head, cfg.head_size
        self.layer, self.n_head, self.head_size = layer, H, N
        self.group_norm_eps = cfg.group_norm_eps
        for name in self.MIXES:
            setattr(self, name, nn.Parameter(torch.zeros(C)))
        self.w0, self.a0 = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.k_k, self.k_a = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.r_k = nn.Parameter(torch.zeros(H, N))
        loras = {"w": cfg.d_decay, "a": cfg.d_iclr, "g": cfg.d_gate}
        if layer > 0:
            self.v0 = nn.Parameter(torch.zeros(C))
            loras["v"] = cfg.d_value
        for name, rank in loras.items():  # x @ w1 → f → @ w2 of the file, as Linears w1 [D, C] and w2 [C, D]
            setattr(self, name + "1", nn.Linear(C, rank, bias=False))
            setattr(self, name + "2", nn.Linear(rank, C, bias=False))
            setattr(self, name + "1_in", ActivationThreshold(layer, f"att.{name}1"))
            setattr(self, name + "2_in", ActivationThreshold(layer, f"att.{name}2"))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=cfg.group_norm_eps)
        self.receptance_in = ActivationThreshold(layer, "att.receptance")
        self.key_in = ActivationThreshold(layer, "att.key")
        self.value_in = ActivationThreshold(layer, "att.value")
        self.output_in = ActivationThreshold(layer, "att.output")

    def lora(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """W_2·T(f(W_1·T(x))), f = LORA_INNER[name]: a low-rank projection, each half with its threshold site."""
        h = getattr(self, name + "1")(getattr(self, name + "1_in")(x))
        h = LORA_INNER[name](h)
        return getattr(self, name + "2")(getattr(self, name + "2_in")(h))

    def forward(self, x, shift, S, v_first):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        d = token_shift(x, shift) - x
        xr, xw, xk, xv, xa, xg = (x + d * getattr(self, m) for m in self.MIXES)
        r = self.receptance(self.receptance_in(xr))
        k = self.key(self.key_in(xk))
        v = self.value(self.value_in(xv))
        log_w = -DECAY_SCALE * torch.sigmoid(self.w0 + self.lora("w", xw))
        a = torch.sigmoid(self.a0 + self.lora("a", xa))
        g = self.lora("g", xg)
        kappa = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + self.lora("v", xv))
        heads = lambda t: t.float().view(B, T, H, N)  # noqa: E731
        y, S = wkv7(S, heads(r), torch.exp(heads(log_w)), heads(k), heads(v), kappa.float(), heads(a))
        y = self.ln_x(y.reshape(B * T, C).to(x.dtype)).view(B, T, C)
        bonus = (heads(r) * heads(k) * self.r_k).sum(-1, keepdim=True) * heads(v)
        o = y + bonus.view(B, T, C).to(x.dtype)
        return self.output(self.output_in(o * g)), x[:, -1], S, v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: RWKV7Config, layer: int):
        super().__init__()
        C, F_ = cfg.d_model, cfg.d_ffn
        self.x_k = nn.Parameter(torch.zeros(C))
        self.key = nn.Linear(C, F_, bias=False)
        self.value = nn.Linear(F_, C, bias=False)
        self.key_in = ActivationThreshold(layer, "ffn.key")
        self.value_in = ActivationThreshold(layer, "ffn.value")

    def forward(self, x, shift):
        xk = x + (token_shift(x, shift) - x) * self.x_k
        k = torch.square(torch.relu(self.key(self.key_in(xk))))
        return self.value(self.value_in(k)), x[:, -1]


class RWKV7(CausalLM):
    """RWKV-7 language model; `forward(idx[B, T], state=None) -> (logits[B, T, vocab], state)`."""

    arch = "rwkv7"
    recurrent = True
    LORAS = ("att.w1", "att.w2", "att.a1", "att.a2", "att.v1", "att.v2", "att.g1", "att.g2")
    PROJECTIONS = ("att.receptance", "att.key", "att.value", *LORAS, "att.output", "ffn.key", "ffn.value")

    def __init__(self, config: RWKV7Config):
        super().__init__()
        self.config = config
        self.dropout = 0.0  # on the block outputs, in training only
        self.emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i, TimeMix, ChannelMix) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head_in = ActivationThreshold(config.n_layer, "head")  # used when `head_threshold` is on

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        c = self.config
        C = c.d_model
        rank = {"w": c.d_decay, "a": c.d_iclr, "v": c.d_value, "g": c.d_gate}
        shapes = {p: (C, C) for p in ("att.receptance", "att.key", "att.value", "att.output")}
        for p in self.LORAS:
            shapes[p] = (C, rank[p[4]]) if p.endswith("1") else (rank[p[4]], C)
        return shapes | {"ffn.key": (C, c.d_ffn), "ffn.value": (c.d_ffn, C)}

    def projection_linears(self):
        out = {}
        for i, block in enumerate(self.blocks):
            for proj in self.PROJECTIONS:
                part, name = proj.split(".")
                if hasattr(getattr(block, part), name):  # layer 0 has no value-residual LoRA
                    out[(i, proj)] = [getattr(getattr(block, part), name)]
        out[(None, "head")] = [self.head]
        return out

    def init_state(self, batch: int = 1) -> RWKV7State:
        cfg = self.config
        dev, dtype = self.emb.weight.device, self.emb.weight.dtype
        L, H, N = cfg.n_layer, cfg.n_head, cfg.head_size
        return RWKV7State(
            att_shift=torch.zeros(L, batch, cfg.d_model, device=dev, dtype=dtype),
            wkv=torch.zeros(L, batch, H, N, N, device=dev),
            ffn_shift=torch.zeros(L, batch, cfg.d_model, device=dev, dtype=dtype),
        )

    def forward(self, idx: torch.Tensor, state: RWKV7State | None = None):
        if state is None:
            state = self.init_state(idx.shape[0])
        x, new, _ = self._blocks(self.emb(idx), state, 0, self.config.n_layer)
        return self._head(x), RWKV7State(*(torch.stack(t) for t in new))

    def _blocks(self, x: torch.Tensor, state: RWKV7State, start: int, stop: int, v_first: torch.Tensor | None = None):
        """Blocks start…stop-1 on the residual stream x (for start = 0: the embedding); returns x and the new
        per-layer state lists and layer 0's values v (`v_first`: the value residual of every later layer, which a
        start after layer 0 needs)."""
        new = [[] for _ in range(3)]
        for i in range(start, stop):
            block = self.blocks[i]
            if i == 0:
                x = block.ln0(x)
            att, shift, S, v_first = block.att(block.ln1(x), state.att_shift[i], state.wkv[i], v_first)
            x = x + F.dropout(att, self.dropout, self.training)
            ffn, fshift = block.ffn(block.ln2(x), state.ffn_shift[i])
            x = x + F.dropout(ffn, self.dropout, self.training)
            for lst, t in zip(new, (shift, S, fshift)):
                lst.append(t)
        return x, new, v_first

    def residual_before(self, idx: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What enters block `layer` for a sequence run from a fresh state: the residual stream and layer 0's
        values (calibration caches it: the layers before the one being searched do not change)."""
        x, _, v_first = self._blocks(self.emb(idx), self.init_state(idx.shape[0]), 0, layer)
        return x, v_first

    def logits_from(self, layer: int, entry: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        """The logits of a sequence whose input to block `layer` is `entry` (fresh state): with
        entry = residual_before(idx, layer), exactly the logits of `forward(idx)`."""
        x, v_first = entry
        x, _, _ = self._blocks(x, self.init_state(x.shape[0]), layer, self.config.n_layer, v_first)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_out(x)
        return self.head(self.head_in(h) if self.head_threshold else h)

    # --- BlinkDL's .pth -----------------------------------------------------------------------------------
    @classmethod
    def config_from_blinkdl(cls, w: dict[str, torch.Tensor]) -> RWKV7Config:
        """The config of a BlinkDL x070 state dict (KeyError / IndexError where it is not one)."""
        n_layer = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
        n_head, head_size = w["blocks.0.att.r_k"].shape
        value_layer = "blocks.1" if n_layer > 1 else "blocks.0"
        return RWKV7Config(
            vocab_size=w["emb.weight"].shape[0], d_model=w["emb.weight"].shape[1], n_layer=n_layer,
            head_size=head_size, d_ffn=w["blocks.0.ffn.key.weight"].shape[0],
            d_decay=w["blocks.0.att.w1"].shape[1], d_iclr=w["blocks.0.att.a1"].shape[1],
            d_value=w[f"{value_layer}.att.v1"].shape[1] if f"{value_layer}.att.v1" in w else 0,
            d_gate=w["blocks.0.att.g1"].shape[1],
        )

    @classmethod
    def tensors_from_blinkdl(cls, w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A BlinkDL x070 state dict under this model's names: LoRA matrices transposed into Linears, mixes and
        biases [1, 1, C] as vectors; layer 0's v0/v1/v2 (read by nothing) left out."""
        out = {}
        for k, t in w.items():
            part = k.split(".")
            if k.startswith("blocks.0.att.v") and part[-1] in ("v0", "v1", "v2"):
                continue
            if len(part) == 4 and part[2] == "att" and part[3] in _LORA_KEYS:
                out[k + ".weight"] = t.t()
            elif len(part) == 4 and part[3] != "r_k" and t.dim() == 3:
                out[k] = t.reshape(-1)
            else:
                out[k] = t
        return out

    def blinkdl_tensors(self) -> dict[str, torch.Tensor]:
        """The model as a BlinkDL x070 state dict, as the `rwkv` package reads it (layer 0's v0/v1/v2 as zeros)."""
        out = {}
        for k, t in self.state_dict().items():
            t = t.detach().clone()
            part = k.split(".")
            if len(part) == 5 and part[3] in _LORA_KEYS:
                out[k.removesuffix(".weight")] = t.t().contiguous()
            elif t.dim() == 1 and len(part) == 4 and (part[3] in TimeMix.MIXES or part[3] in _VECTORS):
                out[k] = t.reshape(1, 1, -1)
            else:
                out[k] = t
        c = self.config
        out["blocks.0.att.v0"] = torch.zeros(1, 1, c.d_model)
        out["blocks.0.att.v1"] = torch.zeros(c.d_model, c.d_value)
        out["blocks.0.att.v2"] = torch.zeros(c.d_value, c.d_model)
        return out

    # --- weights --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> "RWKV7":
        """An initialisation after BlinkDL's x070 training code (decay spread over channels, zero LoRA downs and
        output projections, so every block starts near the identity), deterministic for a seed."""
        g = torch.Generator().manual_seed(seed)
        cfg = self.config
        C, L = cfg.d_model, cfg.n_layer
        ddd = torch.arange(C, dtype=torch.float32) / C
        self.emb.weight.uniform_(-1e-4, 1e-4, generator=g)
        nn.init.orthogonal_(self.head.weight, gain=0.5 * max(1.0, (cfg.vocab_size / C) ** 0.5), generator=g)
        for i, block in enumerate(self.blocks):
            att, ffn = block.att, block.ffn
            r01, r1a0 = i / max(1, L - 1), 1.0 - i / L
            for name, power in zip(TimeMix.MIXES, (0.2, 0.9, 0.7, 0.7, 0.9, 0.2)):
                getattr(att, name).copy_(1.0 - ddd ** (power * r1a0))
            n = torch.arange(C, dtype=torch.float32) / max(1, C - 1)
            att.w0.copy_(-7 + 5 * n ** (0.85 + r01 ** 0.5) + 0.5)
            att.a0.zero_()
            att.k_k.fill_(0.85)
            att.k_a.fill_(1.0)
            att.r_k.fill_(-0.04)
            if i > 0:
                att.v0.fill_(1.0)
            for lin in (att.receptance, att.value):
                lin.weight.uniform_(-0.5 / C ** 0.5, 0.5 / C ** 0.5, generator=g)
            att.key.weight.uniform_(-0.05 / C ** 0.5, 0.05 / C ** 0.5, generator=g)
            att.output.weight.zero_()
            for name in "wavg":
                if hasattr(att, name + "1"):
                    getattr(att, name + "1").weight.zero_()
                    nn.init.orthogonal_(getattr(att, name + "2").weight, gain=0.1, generator=g)
            att.ln_x.weight.fill_(((1 + i) / L) ** 0.7)
            att.ln_x.bias.zero_()
            ffn.x_k.copy_(1.0 - ddd ** (r1a0 ** 4))
            ffn.key.weight.uniform_(-0.5 / C ** 0.5, 0.5 / C ** 0.5, generator=g)
            ffn.value.weight.zero_()
        return self

    @torch.no_grad()
    def randomize(self, seed: int = 0, scale: float = 0.5) -> "RWKV7":
        """Random weights with every part active (no zero matrices): for tests that compare implementations."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            last = name.split(".")[-1]
            if last in TimeMix.MIXES or last in ("x_k", "k_a"):
                p.uniform_(0.0, 1.0, generator=g)
            elif last in ("w0", "a0", "v0", "r_k"):
                p.uniform_(-1.5, 1.0, generator=g)
            elif last == "k_k":
                p.uniform_(0.5, 1.5, generator=g)
            elif name.split(".")[-2].startswith("ln") and last == "weight":
                p.uniform_(0.5, 1.5, generator=g)
            elif last == "bias":
                p.uniform_(-0.2, 0.2, generator=g)
            else:
                p.normal_(0.0, scale / p.shape[-1] ** 0.5 if p.dim() == 2 and name != "emb.weight" else 1.0, generator=g)
        return self


# BlinkDL's LoRA matrices (x @ w1 in the file) and [1, 1, C] vectors of TimeMix besides the mixes
_LORA_KEYS = ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2")
_VECTORS = ("w0", "a0", "v0", "k_k", "k_a", "x_k")
