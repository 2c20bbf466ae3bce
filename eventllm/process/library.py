"""The processes an RWKV-4 block and an OPT decoder layer are made of (what each *is*: Vars and ports).

Port names: a process with one input calls it `inp`, with one output `out`; two-input processes use `a` and
`b`. Array arguments become Vars under the same name (the names follow the checkpoint keys where there is
one, e.g. WKV's `time_decay`), scalar arguments are kept in `attrs`; `cls(name, layer=…, **attrs,
**arrays)` rebuilds a process, which is how a saved graph loads.
"""

from __future__ import annotations

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.core import KINDS, Process  # noqa: F401  (KINDS: every kind defined here registers itself)

# The WKV state's running maximum starts at "minus infinity" as a finite number (as in the torch model).
WKV_P_INIT = -1e38


def _integer_weights(proc: "Process", weights, scale, bits: int, per: str) -> np.ndarray:
    """Declare `weights` as `bits`-bit integers (int8 arrays, |Q| ≤ 2^(bits−1) − 1) with one `scale` per `per`
    (a Dense's outputs, a table's rows); clear errors for anything else."""
    q = np.asarray(weights)
    limit = (1 << (bits - 1)) - 1
    if scale is None or not np.issubdtype(q.dtype, np.integer) or q.size and np.abs(q.astype(np.int32)).max() > limit:
        raise GraphError(f"{proc.name}: {bits}-bit weights must be integers in [-{limit}, {limit}] with a scale per {per}; "
                         "quantise with eventllm.models.quantize")
    w = proc._var("weights", q, "weight", dtype=np.int8)
    sc = proc._var("scale", _vector(proc.name, scale, "scale"), "param")
    if w.ndim != 2 or sc.size != w.shape[0]:
        raise GraphError(f"{proc.name}: {w.shape[0] if w.ndim else 0} {per}s but {sc.size} scales")
    return w


def _vector(name: str, value, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 1:
        raise GraphError(f"{name}: {what} must be a vector, got shape {arr.shape}")
    return arr


class Embedding(Process):
    """Token input: looks up the embedding row of the current token (one event per non-zero entry)."""

    kind = "embedding"

    def __init__(self, name: str, *, weights, scale=None, weight_bits: int = 16, layer: int | None = None):
        super().__init__(name, layer, **({"weight_bits": int(weight_bits)} if weight_bits != 16 else {}))
        if weight_bits not in (16, 8, 4):
            raise GraphError(f"{name}: weight_bits must be 16, 8 or 4, got {weight_bits!r}")
        if weight_bits < 16:  # an integer table with one scale per row: row · scale[row]
            w = _integer_weights(self, weights, scale, weight_bits, "row")
        else:
            w = self._var("weights", weights, "weight")
        if w.ndim != 2:
            raise GraphError(f"{name}: embedding weights must be [vocab, d], got shape {w.shape}")
        self._in("token", 1)
        self._out("out", w.shape[1])


class PositionalEmbedding(Process):
    """OPT's token input: token embedding + learned position embedding (row position + offset)."""

    kind = "positional_embedding"

    def __init__(self, name: str, *, weights, positions, offset: int = 2, layer: int | None = None):
        super().__init__(name, layer, offset=int(offset))
        w = self._var("weights", weights, "weight")
        pos = self._var("positions", positions, "weight")
        if w.ndim != 2 or pos.ndim != 2 or w.shape[1] != pos.shape[1]:
            raise GraphError(f"{name}: token and position embeddings must be [n, d] with one d, got {w.shape} and {pos.shape}")
        self._var("position", [0], "state", dtype=np.int64)
        self._in("token", 1)
        self._out("out", w.shape[1])

    @property
    def max_positions(self) -> int:
        return self.vars["positions"].value.shape[0] - self.attrs["offset"]


class LayerNorm(Process):
    kind = "layer_norm"

    def __init__(self, name: str, *, weight, bias, eps: float = 1e-5, layer: int | None = None):
        super().__init__(name, layer, eps=float(eps))
        w = self._var("weight", _vector(name, weight, "weight"), "param")
        self._var("bias", _vector(name, bias, "bias"), "param")
        self._in("inp", w.size)
        self._out("out", w.size)


class ShiftMix(Process):
    """RWKV token shift: for each ratio `mix_X`, out-port X = x · mix_X + x_prev · (1 − mix_X).

    State `prev` holds the previous token's input (zeros before the first token).
    """

    kind = "shift_mix"

    def __init__(self, name: str, *, layer: int | None = None, **mixes):
        super().__init__(name, layer)
        if not mixes or not all(k.startswith("mix_") for k in mixes):
            raise GraphError(f"{name}: give the mixing ratios as mix_<port>=vector, got {sorted(mixes)}")
        sizes = set()
        for key, value in mixes.items():
            m = self._var(key, _vector(name, value, key), "param")
            sizes.add(m.size)
            self._out(key[len("mix_"):], m.size)
        if len(sizes) != 1:
            raise GraphError(f"{name}: all mixing ratios must have one size, got {sorted(sizes)}")
        n = sizes.pop()
        self._var("prev", np.zeros(n), "state")
        self._in("inp", n)


class Threshold(Process):
    """T_θ(x) = x where |x| > θ, else 0: only the surviving entries become events.

    θ is one number, or one per input (per-neuron thresholds θ_i = score_theta / ‖W[:, i]‖, `score_theta` the
    site's bound on the weight-aware score |x_i|·‖W[:, i]‖; each input then reads its own θ_i).

    With event_bits = 8 the events are int8 graded spikes with one scale per token (s = max |y| / 127, sent as
    round(y / s) · s; `eventllm.models.threshold.quantize_events`).

    Delta events (`delta` = θ_Δ ≥ 0, sigma-delta): the site keeps x̂ (state `sent`, zeros before the first
    token), the sum of everything it has sent. Per token it forms y = T_θ(x) and d = y − x̂, zeroes the entries
    with |d| ≤ θ_Δ, quantises d (int8 events), sends d and adds it to x̂. Its receivers are Dense processes with
    `accumulate`, which add W·d to the output they keep, so they hold W·x̂. With θ_Δ = 0, x̂ follows y to float
    rounding and the receivers' outputs are the plain model's; entries that stay equal from one token to the
    next send nothing, an entry that drops to zero sends one event (−x̂)."""

    kind = "threshold"

    def __init__(self, name: str, *, n: int, theta=0.0, layer: int | None = None, projection: str = "", event_bits: int = 16,
                 delta: float | None = None, score_theta: float | None = None):
        super().__init__(name, layer, n=int(n), projection=projection, event_bits=int(event_bits),
                         **({"delta": float(delta)} if delta is not None else {}),
                         **({"score_theta": float(score_theta)} if score_theta is not None else {}))
        t = self._var("theta", theta, "param")
        if t.shape not in ((), (n,)) or not np.all(t >= 0):
            raise GraphError(f"{name}: θ must be one non-negative number or one per input ({n}), got shape {t.shape}")
        if t.shape == (n,) and score_theta is None:
            raise GraphError(f"{name}: a θ per input needs the score bound it comes from (score_theta: θ_i = score_theta / ‖W[:, i]‖)")
        if event_bits not in (16, 8):
            raise GraphError(f"{name}: event_bits must be 16 or 8, got {event_bits!r}")
        if delta is not None:
            if not isinstance(delta, (int, float)) or not delta >= 0:
                raise GraphError(f"{name}: the delta threshold θ_Δ must be a non-negative number, got {delta!r}")
            self._var("sent", np.zeros(n), "state", dtype=np.float64)  # see ThresholdModel.run
        self._in("inp", n)
        self._out("out", n)

    @property
    def theta(self) -> float:
        """The site's θ: its one threshold, or with per-neuron thresholds the score bound they come from."""
        return float(self.attrs.get("score_theta", self.vars["theta"].value))

    @property
    def delta(self) -> float | None:
        """θ_Δ of a delta-event site, None for a plain one."""
        return self.attrs.get("delta")


class Dense(Process):
    """A linear projection out = W · inp (+ bias): each input event reads one column of W (fan-out = rows).

    Low-bit weights (weight_bits 8 or 4): `weights` holds the integers Q (int8 arrays, |Q| ≤ 2^(bits−1) − 1) and
    `scale` one float per output, out = scale ⊙ (Q · inp) (+ bias); memory counts each weight at its bits.

    `accumulate` (the receiver of a delta-event site): the process keeps acc = Σ_t W·inp_t (state `acc`, before
    scale and bias) and outputs scale ⊙ acc (+ bias): its inputs are changes, its output the value."""

    kind = "dense"

    def __init__(self, name: str, *, weights, bias=None, scale=None, weight_bits: int = 16, layer: int | None = None,
                 projection: str = "", accumulate: bool = False):
        super().__init__(name, layer, projection=projection, weight_bits=int(weight_bits),
                         **({"accumulate": True} if accumulate else {}))
        if weight_bits not in (16, 8, 4):
            raise GraphError(f"{name}: weight_bits must be 16, 8 or 4, got {weight_bits!r}")
        if weight_bits < 16:
            w = _integer_weights(self, weights, scale, weight_bits, "output")
        elif scale is not None:
            raise GraphError(f"{name}: a scale needs 8- or 4-bit weights (weight_bits), got weight_bits 16")
        else:
            w = self._var("weights", weights, "weight")
        if w.ndim != 2:
            raise GraphError(f"{name}: Dense weights must be [out, in], got shape {w.shape}")
        if bias is not None:
            b = self._var("bias", _vector(name, bias, "bias"), "param")
            if b.size != w.shape[0]:
                raise GraphError(f"{name}: bias has {b.size} entries for {w.shape[0]} outputs")
        if accumulate:
            self._var("acc", np.zeros(w.shape[0]), "state", dtype=np.float64)
        self._in("inp", w.shape[1])
        self._out("out", w.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in)"""
        return tuple(self.vars["weights"].value.shape)

    @property
    def weight_bits(self) -> int:
        return self.attrs.get("weight_bits", 16)

    @property
    def accumulates(self) -> bool:
        return bool(self.attrs.get("accumulate"))

    @property
    def input_event_bits(self) -> int:
        """Bits of the events arriving (8: int8 events from a threshold site; 16: float values)."""
        port = self.in_ports["inp"]
        return port.sources[0].src.process.attrs.get("event_bits", 16) if port.sources else 16


class WKV(Process):
    """RWKV-4's WKV recurrence per channel, with state (a, b, p); inputs k and v, output wkv."""

    kind = "wkv"

    def __init__(self, name: str, *, time_decay, time_first, layer: int | None = None):
        super().__init__(name, layer)
        d = self._var("time_decay", _vector(name, time_decay, "time_decay"), "param")
        u = self._var("time_first", _vector(name, time_first, "time_first"), "param")
        if d.size != u.size:
            raise GraphError(f"{name}: time_decay ({d.size}) and time_first ({u.size}) differ in size")
        n = d.size
        for s in ("a", "b", "p"):
            self._var(s, np.zeros(n), "state")
        self._in("k", n)
        self._in("v", n)
        self._out("out", n)

    def initial_state(self):
        state = super().initial_state()
        state["p"][:] = WKV_P_INIT
        return state


class Elementwise(Process):
    """Base of the one-input pointwise neurons."""

    def __init__(self, name: str, *, n: int, layer: int | None = None):
        super().__init__(name, layer, n=int(n))
        self._in("inp", n)
        self._out("out", n)


class Sigmoid(Elementwise):
    kind = "sigmoid"


class ReLU(Elementwise):
    kind = "relu"


class SquaredReLU(Elementwise):
    kind = "squared_relu"


class Binary(Process):
    """Base of the two-input pointwise neurons (inputs a and b)."""

    def __init__(self, name: str, *, n: int, layer: int | None = None):
        super().__init__(name, layer, n=int(n))
        self._in("a", n)
        self._in("b", n)
        self._out("out", n)


class Multiply(Binary):
    kind = "multiply"


class Add(Binary):
    kind = "add"


class Attention(Process):
    """Causal multi-head self-attention of one token over a key/value cache (OPT).

    Input qkv = [q; k; v] (the fused projection's output); q is scaled by `scale` (as OPT does after q_proj);
    the cache rows 0..position hold the keys and values of all tokens so far (state).
    """

    kind = "attention"

    def __init__(self, name: str, *, d: int, n_head: int, max_positions: int, scale: float, layer: int | None = None):
        super().__init__(name, layer, d=int(d), n_head=int(n_head), max_positions=int(max_positions), scale=float(scale))
        if d % n_head:
            raise GraphError(f"{name}: d ({d}) must be divisible by n_head ({n_head})")
        self._var("k_cache", np.zeros((max_positions, d)), "state")
        self._var("v_cache", np.zeros((max_positions, d)), "state")
        self._var("position", [0], "state", dtype=np.int64)
        self._in("qkv", 3 * d)
        self._out("out", d)
