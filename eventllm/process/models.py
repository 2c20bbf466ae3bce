"""How each process *runs*: one process-model class per kind, numpy only, one token per call.

A model reads its process's Vars (weights, parameters) and updates its state Vars in place; `run` maps the
vectors arriving at the in-ports to the vectors leaving the out-ports. Vectors carry events: the non-zero
entries are the graded spikes, and a Dense model touches only the weight columns of its input events
(`W[:, idx] @ x[idx]`), which is the event-driven computation, vectorised — no Python loop per event.
Everything is float32, as in the torch model, so the executor reproduces its logits to rounding.
"""

from __future__ import annotations

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.core import Process


class ProcessModel:
    def __init__(self, process: Process):
        self.process = process
        self.v = {name: var.value for name, var in process.vars.items()}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class EmbeddingModel(ProcessModel):
    def run(self, inputs):
        token = int(inputs["token"][0])
        table = self.v["weights"]
        if not 0 <= token < table.shape[0]:
            raise GraphError(f"{self.process.name}: token id {token} is outside the vocabulary (0..{table.shape[0] - 1})")
        return {"out": table[token].copy()}


class PositionalEmbeddingModel(EmbeddingModel):
    def run(self, inputs):
        out = super().run(inputs)["out"]
        pos = int(self.v["position"][0])
        if pos >= self.process.max_positions:
            raise GraphError(f"{self.process.name}: the model has {self.process.max_positions} positions and this is token "
                             f"{pos + 1}; reset the executor to start a new sequence")
        self.v["position"][0] = pos + 1
        return {"out": out + self.v["positions"][pos + self.process.attrs["offset"]]}


class LayerNormModel(ProcessModel):
    def run(self, inputs):
        x = inputs["inp"]
        mu = x.mean(dtype=np.float32)
        var = np.square(x - mu).mean(dtype=np.float32)
        y = (x - mu) / np.sqrt(var + np.float32(self.process.attrs["eps"]))
        return {"out": (y * self.v["weight"] + self.v["bias"]).astype(np.float32)}


class ShiftMixModel(ProcessModel):
    def run(self, inputs):
        x = inputs["inp"]
        prev = self.v["prev"]
        out = {}
        for port in self.process.out_ports:
            m = self.v["mix_" + port]
            out[port] = x * m + prev * (1 - m)
        prev[:] = x
        return out


class ThresholdModel(ProcessModel):
    def run(self, inputs):
        x = inputs["inp"]
        theta = self.v["theta"]
        if theta == 0:
            return {"out": x}
        return {"out": np.where(np.abs(x) > theta, x, np.float32(0))}


class DenseModel(ProcessModel):
    def __init__(self, process):
        super().__init__(process)
        # one row per input: an input event selects one contiguous row (W's column), as a core's memory holds it
        self.by_input = np.ascontiguousarray(self.v["weights"].T)

    def run(self, inputs):
        x = inputs["inp"]
        idx = np.flatnonzero(x)  # the input events
        y = x @ self.by_input if idx.size == x.size else x[idx] @ self.by_input[idx]  # no event skipped: the plain product
        if "bias" in self.v:
            y = y + self.v["bias"]
        return {"out": y.astype(np.float32, copy=False)}


class WKVModel(ProcessModel):
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


class SigmoidModel(ProcessModel):
    def run(self, inputs):
        with np.errstate(over="ignore"):
            return {"out": (1 / (1 + np.exp(-inputs["inp"]))).astype(np.float32, copy=False)}


class ReLUModel(ProcessModel):
    def run(self, inputs):
        return {"out": np.maximum(inputs["inp"], np.float32(0))}


class SquaredReLUModel(ProcessModel):
    def run(self, inputs):
        return {"out": np.square(np.maximum(inputs["inp"], np.float32(0)))}


class MultiplyModel(ProcessModel):
    def run(self, inputs):
        return {"out": inputs["a"] * inputs["b"]}


class AddModel(ProcessModel):
    def run(self, inputs):
        return {"out": inputs["a"] + inputs["b"]}


class AttentionModel(ProcessModel):
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


MODELS: dict[str, type[ProcessModel]] = {
    "embedding": EmbeddingModel,
    "positional_embedding": PositionalEmbeddingModel,
    "layer_norm": LayerNormModel,
    "shift_mix": ShiftMixModel,
    "threshold": ThresholdModel,
    "dense": DenseModel,
    "wkv": WKVModel,
    "sigmoid": SigmoidModel,
    "relu": ReLUModel,
    "squared_relu": SquaredReLUModel,
    "multiply": MultiplyModel,
    "add": AddModel,
    "attention": AttentionModel,
}


def model_for(process: Process) -> ProcessModel:
    """The numpy process model that runs `process`."""
    try:
        return MODELS[process.kind](process)
    except KeyError:
        raise GraphError(f"no process model for kind {process.kind!r} ({process.name}); known: {', '.join(sorted(MODELS))}") from None
