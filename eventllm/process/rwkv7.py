"""The process kinds RWKV-7 (x070) adds, each in one place: what it is (Vars, ports) and how it runs (its model,
with its operation count, split rule and Lava counterpart: a process of `eventllm.process.lava.rwkv7`, or the Unary
or Binary operation of its kind in `eventllm.process.lava.processes`). The projections, their threshold sites, the
token shift, sigmoid, squared ReLU, products and sums are the library's kinds; a LoRA is two thresholded Dense
processes with its function between them (`build.rwkv7_graph`).

Per-head kinds (`n_head` heads of N channels, split by heads across cores):
  wkv7           the state S [H, N values, N keys] and its generalised delta rule: S ← S·diag(w) − (S·κ)(κ⊙a)ᵀ + v kᵀ,
                 out y = S·r (inputs r, w, k, v, κ, a)
  head_l2norm    κ = (k ⊙ k_k) / ‖k ⊙ k_k‖ per head (the delta rule's key)
  group_norm     ln_x: layer norm within each head, with weight and bias
  rwkv7_bonus    (Σ_head r ⊙ k ⊙ r_k) · v: the current token's own contribution
Element-wise kinds:
  tanh           the decay LoRA's inner function
  rwkv7_decay    w = exp(−e^−½ · σ(x)): the decay from its LoRA's output (w0 is the up projection's bias)
  rwkv7_key      k ⊙ (1 + (a − 1) ⊙ k_a): the key scaled by the in-context learning rate (inputs k, a)
  lerp           a + (b − a) ⊙ t: the value residual v + (v_first − v) ⊙ σ(…) (inputs a, b, t)

Everything runs in float32 in the order the torch model (`eventllm.models.rwkv7`) computes it.
"""

from __future__ import annotations

import math

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.core import Process
from eventllm.process.library import Binary, Elementwise, _vector
from eventllm.process.models import ProcessModel, implements

DECAY_SCALE = np.float32(math.exp(-0.5))  # as eventllm.models.rwkv7.DECAY_SCALE


class HeadProcess(Process):
    """Base of the per-head kinds: `n` channels in `n_head` heads of equal size."""

    def __init__(self, name: str, *, n: int, n_head: int, layer: int | None = None, **attrs):
        if n_head < 1 or n % n_head:
            raise GraphError(f"{name}: {n} channels do not split into {n_head} heads of equal size")
        super().__init__(name, layer, n=int(n), n_head=int(n_head), **attrs)

    @property
    def head_size(self) -> int:
        return self.attrs["n"] // self.attrs["n_head"]


class WKV7(HeadProcess):
    """The WKV-7 state update with the delta rule, per head; state `state` [H, N, N] (values × keys)."""

    kind = "wkv7"
    INPUTS = ("r", "w", "k", "v", "kappa", "a")

    def __init__(self, name: str, *, n: int, n_head: int, layer: int | None = None):
        super().__init__(name, n=n, n_head=n_head, layer=layer)
        N = self.head_size
        self._var("state", np.zeros((n_head, N, N)), "state")
        for port in self.INPUTS:
            self._in(port, n)
        self._out("out", n)


class HeadL2Norm(HeadProcess):
    kind = "head_l2norm"

    def __init__(self, name: str, *, n: int, n_head: int, k_k, layer: int | None = None):
        super().__init__(name, n=n, n_head=n_head, layer=layer)
        if self._var("k_k", _vector(name, k_k, "k_k"), "param").size != n:
            raise GraphError(f"{name}: k_k must have {n} entries")
        self._in("inp", n)
        self._out("out", n)


class GroupNorm(HeadProcess):
    kind = "group_norm"

    def __init__(self, name: str, *, n: int, n_head: int, weight, bias, eps: float, layer: int | None = None):
        super().__init__(name, n=n, n_head=n_head, layer=layer, eps=float(eps))
        for key, value in (("weight", weight), ("bias", bias)):
            if self._var(key, _vector(name, value, key), "param").size != n:
                raise GraphError(f"{name}: {key} must have {n} entries")
        self._in("inp", n)
        self._out("out", n)


class Bonus7(HeadProcess):
    kind = "rwkv7_bonus"

    def __init__(self, name: str, *, n: int, n_head: int, r_k, layer: int | None = None):
        super().__init__(name, n=n, n_head=n_head, layer=layer)
        if self._var("r_k", np.asarray(r_k, dtype=np.float32).reshape(-1), "param").size != n:
            raise GraphError(f"{name}: r_k must have {n} entries (heads × head size)")
        for port in ("r", "k", "v"):
            self._in(port, n)
        self._out("out", n)


class Tanh(Elementwise):
    kind = "tanh"


class Decay7(Elementwise):
    kind = "rwkv7_decay"


class Key7(Binary):
    """Inputs a = the key, b = the in-context learning rate; param k_a."""

    kind = "rwkv7_key"

    def __init__(self, name: str, *, n: int, k_a, layer: int | None = None):
        super().__init__(name, n=n, layer=layer)
        if self._var("k_a", _vector(name, k_a, "k_a"), "param").size != n:
            raise GraphError(f"{name}: k_a must have {n} entries")


class Lerp(Process):
    kind = "lerp"

    def __init__(self, name: str, *, n: int, layer: int | None = None):
        super().__init__(name, layer, n=int(n))
        for port in ("a", "b", "t"):
            self._in(port, n)
        self._out("out", n)


def _heads(x: np.ndarray, proc: HeadProcess) -> np.ndarray:
    return x.reshape(proc.attrs["n_head"], proc.head_size)


@implements(WKV7)
class WKV7Model(ProcessModel):
    # per output entry (one value channel of a head) and per key channel: the decay, S·κ, the delta-rule
    # update (two products and two sums) and S·r — 9 operations, times the head size (`entry_ops`)
    ops_per_entry = 9
    split = "heads"
    lava = "WKV7"
    quiet_inputs = ("r",)  # y = S·r
    quiet_state_inputs = ("k", "v")  # S ← S·diag(w) − (S·κ)(κ ⊙ a)ᵀ + v kᵀ stays 0 while k or v is

    def entry_ops(self) -> int:
        return self.ops_per_entry * self.process.head_size + 1  # + κ ⊙ a, once per entry

    def run(self, inputs):
        p = self.process
        r, w, k, v, kappa, a = (_heads(inputs[name], p) for name in WKV7.INPUTS)
        S = self.v["state"]
        sk = np.einsum("hij,hj->hi", S, kappa)
        S[:] = S * w[:, None, :] - sk[:, :, None] * (kappa * a)[:, None, :] + v[:, :, None] * k[:, None, :]
        return {"out": np.einsum("hij,hj->hi", S, r).reshape(-1).astype(np.float32, copy=False)}


@implements(HeadL2Norm)
class HeadL2NormModel(ProcessModel):
    ops_per_entry = 4  # the product with k_k, its square summed, the division
    split = "heads"
    lava = "Unary"
    quiet_inputs = ("inp",)

    def run(self, inputs):
        x = _heads(inputs["inp"] * self.v["k_k"], self.process)
        norm = np.sqrt(np.square(x).sum(-1, keepdims=True, dtype=np.float32))
        return {"out": (x / np.maximum(norm, np.float32(1e-12))).reshape(-1).astype(np.float32, copy=False)}


@implements(GroupNorm)
class GroupNormModel(ProcessModel):
    ops_per_entry = 6  # as a layer norm, within each head
    split = "heads"
    lava = "Unary"
    quiet_inputs = ("inp",)

    def run(self, inputs):
        x = _heads(inputs["inp"], self.process)
        mu = x.mean(-1, keepdims=True, dtype=np.float32)
        var = np.square(x - mu).mean(-1, keepdims=True, dtype=np.float32)
        y = ((x - mu) / np.sqrt(var + np.float32(self.process.attrs["eps"]))).reshape(-1)
        return {"out": (y * self.v["weight"] + self.v["bias"]).astype(np.float32)}


@implements(Bonus7)
class Bonus7Model(ProcessModel):
    ops_per_entry = 5  # r·k·r_k summed per head, then times v
    split = "heads"
    lava = "HeadBonus"
    quiet_inputs = ("r", "k", "v")

    def run(self, inputs):
        p = self.process
        s = _heads(inputs["r"] * inputs["k"] * self.v["r_k"], p).sum(-1, keepdims=True, dtype=np.float32)
        return {"out": (s * _heads(inputs["v"], p)).reshape(-1).astype(np.float32, copy=False)}


@implements(Tanh)
class TanhModel(ProcessModel):
    ops_per_entry = 4
    lava = "Unary"
    quiet_inputs = ("inp",)

    def run(self, inputs):
        return {"out": np.tanh(inputs["inp"]).astype(np.float32, copy=False)}


@implements(Decay7)
class Decay7Model(ProcessModel):
    ops_per_entry = 6  # a sigmoid (4), the scale, the exponential
    lava = "Unary"

    def run(self, inputs):
        with np.errstate(over="ignore"):
            sig = (1 / (1 + np.exp(-inputs["inp"]))).astype(np.float32, copy=False)
        return {"out": np.exp(-DECAY_SCALE * sig).astype(np.float32, copy=False)}


@implements(Key7)
class Key7Model(ProcessModel):
    ops_per_entry = 4
    lava = "Binary"
    quiet_inputs = ("a",)

    def run(self, inputs):
        return {"out": inputs["a"] * (1 + (inputs["b"] - 1) * self.v["k_a"])}


@implements(Lerp)
class LerpModel(ProcessModel):
    ops_per_entry = 3
    lava = "Lerp"
    quiet_inputs = (("a", "b"),)  # a + (b − a) ⊙ t

    def run(self, inputs):
        a = inputs["a"]
        return {"out": a + (inputs["b"] - a) * inputs["t"]}
