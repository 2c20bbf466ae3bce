"""How each process *runs*: one process-model class per process class, numpy only, one token per call.

As in Lava, a model is bound to its process by class (`@implements(Dense)`), and it carries what the rest of
the system needs to know about that kind of process, so that a kind lives in one place:

  ops_per_entry  arithmetic operations per output entry (the cost model's neuron ops); required unless
                 `synaptic` (a Dense-like process is charged per input event × fan-out instead)
  split          how `mapping.partition` may cut it across cores: "whole" (it must fit one core), "dense" (by
                 outputs or by inputs), "rows" (a lookup table, by rows), "heads" (attention, by heads)
  lava           the name of its counterpart in `eventllm.process.lava.network.COUNTERPARTS` (None: not bridged)
  extra_counts   data-dependent counts beyond events and ops (table lookups, a growing attention cache)
  quiet_inputs   in-ports any one of which (or a tuple of in-ports all of which), sending no event at a token,
                 leaves the out-port sending only the non-zero entries of the `bias` Var (none without one):
                 W·0 = 0, 0·b = 0, 0 + 0 = 0, a norm of 0 is its bias. The trace engine counts those exact zeros,
                 which the torch model's masks do not show
  quiet_state_inputs  for a state that starts at zero: in-ports any one of which, sending no event, keeps a zero
                 state zero (S + v kᵀ with k = 0); while the state is zero the out-port sends as for `quiet_inputs`

The model owns the run state: it copies the process's initial state and never writes the graph's Vars, so
one graph serves any number of runs (thresholded, natural, dense shadow) side by side. Run options such as
θ = 0 are `overrides` of a Var's value for this run only.

A model reads its process's Vars; `run` maps the vectors arriving at the in-ports to the vectors leaving the
out-ports. Vectors carry events: the non-zero entries are the graded spikes, and a Dense model touches only
the weight columns of its input events (`W[:, idx] @ x[idx]`), which is the event-driven computation,
vectorised — no Python loop per event. Everything is float32, as in the torch model, so the executor
reproduces its logits to rounding.
"""

from __future__ import annotations

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.core import Process
from eventllm.process.library import (
    WKV, Add, Attention, Dense, Embedding, LayerNorm, Multiply, PositionalEmbedding, ReLU, ShiftMix, Sigmoid,
    SquaredReLU, Threshold,
)

SPLITS = ("whole", "dense", "rows", "heads")


def packed_words(n: int, bits: int) -> int:
    """16-bit memory words that n consecutive weights of `bits` bits fill (16-bit weights: one word each), the unit
    the cost presets charge a weight read in."""
    return n if bits >= 16 else -(-n * bits // 16)
_MODEL_OF: dict[type[Process], type["ProcessModel"]] = {}


class ProcessModel:
    ops_per_entry: int | None = None
    synaptic: bool = False
    split: str = "whole"
    lava: str | None = None
    quiet_inputs: tuple[str | tuple[str, ...], ...] = ()
    quiet_state_inputs: tuple[str, ...] = ()

    def __init__(self, process: Process, overrides: dict[str, float] | None = None):
        self.process = process
        self.overrides = dict(overrides or {})
        self.v: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """Start a new sequence: the state back to the process's initial state (the graph is not touched)."""
        init = self.process.initial_state()
        for name, var in self.process.vars.items():
            if var.role == "state":
                self.v[name] = init[name].copy()
            elif name in self.overrides:
                self.v[name] = np.full_like(var.value, self.overrides[name])
            else:
                self.v[name] = var.value

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def entry_ops(self) -> int:
        """Operations per output entry of this process (its settings may add to the kind's `ops_per_entry`)."""
        return self.ops_per_entry

    def extra_counts(self, outputs: dict[str, np.ndarray], token: int, shard_ids: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, counts: np.ndarray, column: dict[str, int]) -> None:
        """Add the data-dependent counts of this token to `counts` [shards, counters] (rows `shard_ids`, this
        process's shards covering [lo, hi) of its split axis; `column` names the counter columns)."""

    @classmethod
    def has_extra_counts(cls) -> bool:
        return cls.extra_counts is not ProcessModel.extra_counts


def implements(process_class: type[Process]):
    """Class decorator binding a process model to the process class it runs (Lava's `@implements`)."""
    def bind(model_class: type[ProcessModel]) -> type[ProcessModel]:
        if model_class.split not in SPLITS:
            raise GraphError(f"{model_class.__name__}.split must be one of {SPLITS}, got {model_class.split!r}")
        if model_class.ops_per_entry is None and not model_class.synaptic:
            raise GraphError(f"{model_class.__name__} must say its ops_per_entry (operations per output entry) for the cost model")
        model_class.process_class = process_class
        _MODEL_OF[process_class] = model_class
        return model_class
    return bind


def model_class_for(process: Process) -> type[ProcessModel]:
    """The process-model class bound to `process`'s class (or the nearest base class that has one)."""
    for cls in type(process).__mro__:
        if cls in _MODEL_OF:
            return _MODEL_OF[cls]
    raise GraphError(f"no process model implements {type(process).__name__} (kind {process.kind!r}, {process.name}); "
                     "define one with @implements(" + type(process).__name__ + ")")


def model_for(process: Process, overrides: dict[str, float] | None = None) -> ProcessModel:
    """A fresh numpy process model that runs `process` (its own state; `overrides` replace Var values)."""
    return model_class_for(process)(process, overrides)


@implements(Embedding)
class EmbeddingModel(ProcessModel):
    ops_per_entry = 0
    split = "rows"
    lava = "TokenIn"

    def run(self, inputs):
        token = int(inputs["token"][0])
        table = self.v["weights"]
        if not 0 <= token < table.shape[0]:
            raise GraphError(f"{self.process.name}: token id {token} is outside the vocabulary (0..{table.shape[0] - 1})")
        if "scale" in self.v:  # an integer table: the row times its scale
            return {"out": table[token].astype(np.float32) * self.v["scale"][token]}
        return {"out": table[token].copy()}

    def row_words(self, d: int) -> int:
        """Memory words one row of d entries fills (integer tables pack 16/bits entries per word)."""
        return packed_words(d, self.process.attrs.get("weight_bits", 16))

    def _rows(self, token: int) -> list[int]:
        """The table rows this token reads."""
        return [token]

    def extra_counts(self, outputs, token, shard_ids, lo, hi, counts, column):
        d = outputs["out"].size
        for r in self._rows(token):
            counts[shard_ids[(lo <= r) & (r < hi)], column["weight_reads"]] += self.row_words(d)
        owner = (lo <= token) & (token < hi)
        counts[shard_ids[~owner], column["events_out"]] = 0  # only the shard holding the token's row sends
        counts[shard_ids[owner], column["neuron_updates"]] += d
        counts[shard_ids[owner], column["neuron_ops"]] += self.ops_per_entry * d


@implements(PositionalEmbedding)
class PositionalEmbeddingModel(EmbeddingModel):
    ops_per_entry = 1

    def run(self, inputs):
        out = super().run(inputs)["out"]
        pos = int(self.v["position"][0])
        if pos >= self.process.max_positions:
            raise GraphError(f"{self.process.name}: the model has {self.process.max_positions} positions and this is token "
                             f"{pos + 1}; reset the executor to start a new sequence")
        self.v["position"][0] = pos + 1
        return {"out": out + self.v["positions"][pos + self.process.attrs["offset"]]}

    def _rows(self, token: int) -> list[int]:
        # the token's row and (after `run` advanced the position) the row of the position just used
        vocab = self.v["weights"].shape[0]
        return [token, vocab + int(self.v["position"][0]) - 1 + self.process.attrs["offset"]]


@implements(LayerNorm)
class LayerNormModel(ProcessModel):
    ops_per_entry = 6
    lava = "Unary"
    quiet_inputs = ("inp",)

    def run(self, inputs):
        x = inputs["inp"]
        mu = x.mean(dtype=np.float32)
        var = np.square(x - mu).mean(dtype=np.float32)
        y = (x - mu) / np.sqrt(var + np.float32(self.process.attrs["eps"]))
        return {"out": (y * self.v["weight"] + self.v["bias"]).astype(np.float32)}


@implements(ShiftMix)
class ShiftMixModel(ProcessModel):
    ops_per_entry = 3
    lava = "ShiftMix"

    def run(self, inputs):
        x = inputs["inp"]
        prev = self.v["prev"]
        out = {}
        for port in self.process.out_ports:
            m = self.v["mix_" + port]
            out[port] = x * m + prev * (1 - m)
        prev[:] = x
        return out


@implements(Threshold)
class ThresholdModel(ProcessModel):
    ops_per_entry = 1
    lava = "Unary"
    quiet_inputs = ("inp",)

    def entry_ops(self) -> int:
        # int8 events: also the running max of |y| and the divide-and-round of each entry; delta events: the
        # difference with x̂, its comparison with θ_Δ and the update of x̂
        ops = 4 if self.process.attrs.get("event_bits", 16) == 8 else 1
        return ops + (3 if self.process.delta is not None else 0)

    def run(self, inputs):
        x = inputs["inp"]
        theta = self.v["theta"]
        y = x if not theta.any() else np.where(np.abs(x) > theta, x, np.float32(0))
        delta = self.process.delta
        if delta is not None:  # send the change since what was sent (see Threshold)
            # x̂ is the float64 sum of the float32 events sent, as the receivers' sums are: both stay equal, and
            # x̂ differs from y by one rounding of the last change, so no error builds up over the tokens
            sent = self.v["sent"]
            y = (y - sent).astype(np.float32)
            if delta > 0:
                y = np.where(np.abs(y) > delta, y, np.float32(0))
        if self.process.attrs.get("event_bits", 16) == 8:  # int8 graded spikes, one scale per token
            s = np.abs(y).max() / np.float32(127)
            y = np.round(y / s) * s if s > 0 else y
        y = y.astype(np.float32, copy=False)
        if delta is not None:
            sent += y
        return {"out": y}


@implements(Dense)
class DenseModel(ProcessModel):
    synaptic = True
    split = "dense"
    lava = "Dense"  # lava.proc.dense (a hierarchical BiasedDense where it has a bias)
    quiet_inputs = ("inp",)

    # int8 events into integer weights: integer MACs, whose sums float32 holds exactly up to 2^24; at most this many
    # events of |q| ≤ 127 into weights of |Q| ≤ 127 stay below it, more are summed in float64
    EXACT_EVENTS = (1 << 24) // (127 * 127)

    def __init__(self, process, overrides=None):
        super().__init__(process, overrides)
        # one row per input: an input event selects one contiguous row (W's column), as a core's memory holds it;
        # integer weights are exact in float32, and the scale multiplies each output once
        self.by_input = np.ascontiguousarray(self.v["weights"].T, dtype=np.float32)
        self.integer_macs = "scale" in self.v and process.input_event_bits == 8
        # a delta receiver sums its changes in float64 (see run): its rows once, in float64
        self.by_input64 = self.by_input.astype(np.float64) if "acc" in self.v and not self.integer_macs else None

    def run(self, inputs):
        x = inputs["inp"]
        idx = np.flatnonzero(x)  # the input events
        keep = "acc" in self.v  # the receiver of delta events: its output is the sum of every change so far
        if self.integer_macs and idx.size:
            # the events are integers q times the token's scale s (Threshold): Q · q summed exactly, as the
            # hardware's integer MACs (and lava's fixed-point Dense) do, then times s
            s = np.abs(x[idx]).max() / np.float32(127)
            q = np.round(x[idx] / s)
            rows = self.by_input[idx]
            exact = q @ rows if idx.size <= self.EXACT_EVENTS else q.astype(np.float64) @ rows.astype(np.float64)
            y = exact.astype(np.float64) * s if keep else (exact * s).astype(np.float32)
        elif keep:  # float64, so that the sum of many changes rounds once, like the plain product of the value
            y = x[idx].astype(np.float64) @ self.by_input64[idx]
        else:
            y = x @ self.by_input if idx.size == x.size else x[idx] @ self.by_input[idx]  # no event skipped: the plain product
        if keep:
            self.v["acc"] += y
            y = self.v["acc"].astype(np.float32)
        if "scale" in self.v:
            y = y * self.v["scale"]
        if "bias" in self.v:
            y = y + self.v["bias"]
        return {"out": y.astype(np.float32, copy=False)}


@implements(WKV)
class WKVModel(ProcessModel):
    ops_per_entry = 14
    lava = "WKV"
    quiet_state_inputs = ("v",)  # a ← e^-w a + e^k v stays 0 while v is; then out = (e^p a + e^(u+k) v) / … = 0
    """The WKV recurrence in the numerically safe form of RWKV-4 (log-scale p carried with a and b)."""

    def run(self, inputs):
        k, v = inputs["k"], inputs["v"]
        a, b, p = self.v["a"], self.v["b"], self.v["p"]
        w = -np.exp(self.v["time_decay"])
        u = self.v["time_first"]
        ww = u + k
        q = np.maximum(p, ww)
        e1, e2 = np.exp(p - q), np.exp(ww - q)
        out = (e1 * a + e2 * v) / (e1 * b + e2)
        ww = w + p
        q = np.maximum(ww, k)
        e1, e2 = np.exp(ww - q), np.exp(k - q)
        a[:] = e1 * a + e2 * v
        b[:] = e1 * b + e2
        p[:] = q
        return {"out": out.astype(np.float32, copy=False)}


@implements(Sigmoid)
class SigmoidModel(ProcessModel):
    ops_per_entry = 4
    lava = "Unary"

    def run(self, inputs):
        with np.errstate(over="ignore"):
            return {"out": (1 / (1 + np.exp(-inputs["inp"]))).astype(np.float32, copy=False)}


@implements(ReLU)
class ReLUModel(ProcessModel):
    ops_per_entry = 1
    lava = "Unary"
    quiet_inputs = ("inp",)

    def run(self, inputs):
        return {"out": np.maximum(inputs["inp"], np.float32(0))}


@implements(SquaredReLU)
class SquaredReLUModel(ProcessModel):
    ops_per_entry = 2
    lava = "Unary"
    quiet_inputs = ("inp",)

    def run(self, inputs):
        return {"out": np.square(np.maximum(inputs["inp"], np.float32(0)))}


@implements(Multiply)
class MultiplyModel(ProcessModel):
    ops_per_entry = 1
    lava = "Binary"
    quiet_inputs = ("a", "b")

    def run(self, inputs):
        return {"out": inputs["a"] * inputs["b"]}


@implements(Add)
class AddModel(ProcessModel):
    ops_per_entry = 1
    lava = "Binary"
    quiet_inputs = (("a", "b"),)

    def run(self, inputs):
        return {"out": inputs["a"] + inputs["b"]}


@implements(Attention)
class AttentionModel(ProcessModel):
    ops_per_entry = 0
    split = "heads"
    lava = "Attention"

    def run(self, inputs):
        a = self.process.attrs
        d, n_head = a["d"], a["n_head"]
        qkv = inputs["qkv"]
        pos = int(self.v["position"][0])
        if pos >= a["max_positions"]:
            raise GraphError(f"{self.process.name}: the key/value cache holds {a['max_positions']} tokens and is full; "
                             "reset the executor to start a new sequence")
        q = qkv[:d] * np.float32(a["scale"])
        self.v["k_cache"][pos] = qkv[d : 2 * d]
        self.v["v_cache"][pos] = qkv[2 * d :]
        self.v["position"][0] = pos + 1
        hd = d // n_head
        keys = self.v["k_cache"][: pos + 1].reshape(pos + 1, n_head, hd)
        values = self.v["v_cache"][: pos + 1].reshape(pos + 1, n_head, hd)
        scores = np.einsum("thd,hd->ht", keys, q.reshape(n_head, hd))
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        return {"out": np.einsum("ht,thd->hd", probs, values).reshape(d).astype(np.float32, copy=False)}

    def extra_counts(self, outputs, token, shard_ids, lo, hi, counts, column):
        # the work grows with the number of cached tokens (the position after `run`)
        a = self.process.attrs
        pos = int(self.v["position"][0])
        frac = (hi - lo) / a["n_head"]
        d_part = a["d"] * frac
        counts[shard_ids, column["neuron_ops"]] += 2 * pos * d_part + 4 * pos * a["n_head"] * frac
        counts[shard_ids, column["neuron_updates"]] += d_part
        counts[shard_ids, column["state_reads"]] += 2 * pos * d_part
        counts[shard_ids, column["state_writes"]] += 2 * d_part
