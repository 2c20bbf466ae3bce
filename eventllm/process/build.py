"""Builders: a torch model (with its thresholds) → an event-driven process graph.

`build_graph(model)` exports the weights to numpy and wires one process per operation. It needs the torch
model, so it is the one module of `eventllm.process` that touches torch objects — without importing torch
itself: the rest of the package (and a saved graph) runs without it.

Process names: `emb`, (`ln0`), then per layer `L{i}.<part>` — e.g. `L0.att.key.threshold` → `L0.att.key`
(the Dense of that projection) — and finally `ln_out` → `head`, whose out-port is the graph's output.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.core import OutPort, Process
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import (
    WKV, Add, Attention, Dense, Embedding, LayerNorm, Multiply, PositionalEmbedding, ReLU, ShiftMix, Sigmoid,
    SquaredReLU, Threshold,
)
from eventllm.process.rwkv7 import WKV7, Bonus7, Decay7, GroupNorm, HeadL2Norm, Key7, Lerp, Tanh

# RWKV-4's projections in data-flow order (as eventllm.models.rwkv.RWKV.PROJECTIONS, without importing torch)
RWKV_PROJECTIONS = ("att.key", "att.value", "att.receptance", "att.output", "ffn.key", "ffn.receptance", "ffn.value")


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


class _Builder:
    """Collects processes in data-flow order and wires them; weights come from `w(key)` (checkpoint names)."""

    def __init__(self, weights: Mapping[str, np.ndarray], quantization: dict | None = None, bounds: dict | None = None):
        self.w = weights
        # per-neuron thresholds (CausalLM.theta_vectors): the vector θ / ‖W[:, i]‖ of a site, by (layer, projection)
        self.bounds = bounds or {}
        self.procs: list[Process] = []
        # a fake-quantised model's settings (eventllm.models.quantize): scales by "layer.projection" / "head"
        self.q = quantization or {}
        self.event_bits = self.q.get("event_bits", 16)

    def add(self, proc: Process, *feeds: OutPort) -> Process:
        """Add `proc` and connect `feeds` to its in-ports, in declaration order (token inputs excepted)."""
        ins = [p for name, p in proc.in_ports.items() if name != "token"]
        if len(feeds) != len(ins):
            raise GraphError(f"{proc.name}: {len(ins)} in-ports but {len(feeds)} feeds")
        for src, dst in zip(feeds, ins):
            src.connect(dst)
        self.procs.append(proc)
        return proc

    def layer_norm(self, name: str, key: str, layer: int | None, eps: float, x: OutPort) -> OutPort:
        return self.add(LayerNorm(name, weight=self.w[key + ".weight"], bias=self.w[key + ".bias"], eps=eps, layer=layer), x).out

    def dense(self, name: str, layer: int | None, projection: str, weight, bias=None) -> Dense:
        """A Dense process; a quantised projection stores Q = round(W / scale) (exact: W is scale · Q) and its scales."""
        scales = self.q.get("scales", {}).get(projection if layer is None else f"{layer}.{projection}")
        if scales is None:
            return Dense(name, weights=weight, bias=bias, layer=layer, projection=projection)
        scale = np.asarray(scales, dtype=np.float32)
        q = np.round(np.asarray(weight, dtype=np.float32) / scale[:, None]).astype(np.int8)
        return Dense(name, weights=q, scale=scale, bias=bias, weight_bits=self.q["weight_bits"], layer=layer, projection=projection)

    def threshold(self, name: str, layer: int | None, projection: str, x: OutPort, theta: float, key) -> OutPort:
        """The threshold site `key` = (layer, projection): θ, or its per-neuron vector with θ as the score bound."""
        vec = self.bounds.get(key)
        t = Threshold(name, n=x.size, theta=theta if vec is None else vec, layer=layer, projection=projection,
                      event_bits=self.event_bits, score_theta=None if vec is None else theta)
        return self.add(t, x).out

    def thresholded_dense(self, name: str, layer: int, projection: str, x: OutPort, theta: float, weight, bias=None) -> OutPort:
        t = self.threshold(f"{name}.threshold", layer, projection, x, theta, (layer, projection))
        return self.add(self.dense(name, layer, projection, weight, bias), t).out


def rwkv_graph(weights: Mapping[str, np.ndarray], config: dict, thetas: dict[tuple[int, str], float],
               quantization: dict | None = None, bounds: dict | None = None) -> ProcessGraph:
    """The RWKV-4 graph from BlinkDL-named arrays (`emb.weight`, `blocks.0.att.key.weight`, …)."""
    b = _Builder(weights, quantization, bounds)
    w = weights
    eps = config.get("layer_norm_eps", 1e-5)
    A, C, H = config["d_attention"], config["d_model"], config["d_ffn"]
    emb_scale = b.q.get("scales", {}).get("emb")
    if emb_scale is None:
        x = b.add(Embedding("emb", weights=w["emb.weight"])).out
    else:  # an integer table, one scale per row
        sc = np.asarray(emb_scale, dtype=np.float32)
        q = np.round(np.asarray(w["emb.weight"], dtype=np.float32) / sc[:, None]).astype(np.int8)
        x = b.add(Embedding("emb", weights=q, scale=sc, weight_bits=b.q["weight_bits"])).out
    x = b.layer_norm("ln0", "blocks.0.ln0", None, eps, x)
    for i in range(config["n_layer"]):
        p, k_ = f"L{i}.", f"blocks.{i}."
        att, ffn = k_ + "att.", k_ + "ffn."
        h = b.layer_norm(p + "ln1", k_ + "ln1", i, eps, x)
        s = b.add(ShiftMix(p + "att.shift", mix_k=w[att + "time_mix_k"], mix_v=w[att + "time_mix_v"],
                           mix_r=w[att + "time_mix_r"], layer=i), h)
        k = b.thresholded_dense(p + "att.key", i, "att.key", s.k, thetas[(i, "att.key")], w[att + "key.weight"])
        v = b.thresholded_dense(p + "att.value", i, "att.value", s.v, thetas[(i, "att.value")], w[att + "value.weight"])
        r = b.thresholded_dense(p + "att.receptance", i, "att.receptance", s.r, thetas[(i, "att.receptance")], w[att + "receptance.weight"])
        r = b.add(Sigmoid(p + "att.sigmoid", n=A, layer=i), r).out
        wkv = b.add(WKV(p + "att.wkv", time_decay=w[att + "time_decay"], time_first=w[att + "time_first"], layer=i), k, v).out
        g = b.add(Multiply(p + "att.gate", n=A, layer=i), r, wkv).out
        o = b.thresholded_dense(p + "att.output", i, "att.output", g, thetas[(i, "att.output")], w[att + "output.weight"])
        x = b.add(Add(p + "att.residual", n=C, layer=i), x, o).out
        h = b.layer_norm(p + "ln2", k_ + "ln2", i, eps, x)
        s = b.add(ShiftMix(p + "ffn.shift", mix_k=w[ffn + "time_mix_k"], mix_r=w[ffn + "time_mix_r"], layer=i), h)
        k = b.thresholded_dense(p + "ffn.key", i, "ffn.key", s.k, thetas[(i, "ffn.key")], w[ffn + "key.weight"])
        k = b.add(SquaredReLU(p + "ffn.sqrelu", n=H, layer=i), k).out
        v = b.thresholded_dense(p + "ffn.value", i, "ffn.value", k, thetas[(i, "ffn.value")], w[ffn + "value.weight"])
        r = b.thresholded_dense(p + "ffn.receptance", i, "ffn.receptance", s.r, thetas[(i, "ffn.receptance")], w[ffn + "receptance.weight"])
        r = b.add(Sigmoid(p + "ffn.sigmoid", n=C, layer=i), r).out
        g = b.add(Multiply(p + "ffn.gate", n=C, layer=i), r, v).out
        x = b.add(Add(p + "ffn.residual", n=C, layer=i), x, g).out
    x = b.layer_norm("ln_out", "ln_out", None, eps, x)
    head_theta = thetas.get((config["n_layer"], "head"))
    if head_theta is not None:  # the optional threshold before the head (`calibrate --head`)
        x = b.threshold("head.threshold", None, "head", x, head_theta, (config["n_layer"], "head"))
    b.add(b.dense("head", None, "head", w["head.weight"]), x)
    return ProcessGraph(b.procs, "head.out")


def build_rwkv(model) -> ProcessGraph:
    weights = {k: _np(v) for k, v in model.state_dict().items()}
    return rwkv_graph(weights, model.config_dict(), model.get_thetas(), getattr(model, "quantization", None),
                      model.theta_vectors())


class ShapeOnlyRWKVWeights(Mapping):
    """BlinkDL-named RWKV-4 'weights' that are only shapes: every array is one zero broadcast to its shape.

    For mapping studies of large models (e.g. RWKV-4 3B) without allocating their weights.
    """

    def __init__(self, n_layer: int, d_model: int, vocab_size: int, d_ffn: int | None = None):
        self.L, self.C, self.V = n_layer, d_model, vocab_size
        self.H = d_ffn or 4 * d_model

    def _shape(self, key: str) -> tuple[int, ...]:
        C, H, V = self.C, self.H, self.V
        if key == "emb.weight":
            return (V, C)
        if key == "head.weight":
            return (V, C)
        if key.endswith(("ln0.weight", "ln0.bias", "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")) or key.startswith("ln_out"):
            return (C,)
        if "time_" in key:
            return (C,)
        name = key.split(".")[-3] + "." + key.split(".")[-2]
        return {"att.key": (C, C), "att.value": (C, C), "att.receptance": (C, C), "att.output": (C, C),
                "ffn.key": (H, C), "ffn.receptance": (C, C), "ffn.value": (C, H)}[name]

    def __getitem__(self, key: str) -> np.ndarray:
        return np.broadcast_to(np.float32(0.5 if "time_mix" in key or key.endswith("ln0.weight") else 0.0), self._shape(key))

    def __iter__(self):
        raise TypeError("shape-only weights are looked up by name, not listed")

    def __len__(self) -> int:
        return 0


def rwkv_shape_graph(n_layer: int, d_model: int, vocab_size: int = 50277, d_ffn: int | None = None) -> ProcessGraph:
    """An RWKV-4 graph with real structure and sizes but no weight memory (every array a broadcast zero).

    >>> g = rwkv_shape_graph(32, 2560)     # the shape of RWKV-4 3B; allocates a few MB, not 12 GB
    >>> round(g.n_parameters() / 1e9, 2)
    2.98
    """
    cfg = {"n_layer": n_layer, "d_model": d_model, "d_attention": d_model, "d_ffn": d_ffn or 4 * d_model}
    thetas = {(i, p): 0.0 for i in range(n_layer) for p in RWKV_PROJECTIONS}
    graph = rwkv_graph(ShapeOnlyRWKVWeights(n_layer, d_model, vocab_size, d_ffn), cfg, thetas)
    graph.meta.update({"arch": "rwkv4", "model": f"rwkv4 shape {n_layer}x{d_model}", "shape_only": True,
                       "config": cfg | {"vocab_size": vocab_size}, "projections": list(RWKV_PROJECTIONS), "n_layer": n_layer})
    return graph


def rwkv7_graph(weights: Mapping[str, np.ndarray], config: dict, thetas: dict[tuple[int, str], float],
                quantization: dict | None = None, bounds: dict | None = None) -> ProcessGraph:
    """The RWKV-7 graph from the torch model's arrays (`eventllm.models.rwkv7` names: `blocks.0.att.w1.weight`, …),
    one process per operation of `RWKV7.forward`, in its order."""
    b = _Builder(weights, quantization, bounds)
    w = weights
    eps = config.get("layer_norm_eps", 1e-5)
    C, F_ = config["d_model"], config["d_ffn"]
    H = C // config["head_size"]
    x = b.add(Embedding("emb", weights=w["emb.weight"])).out
    x = b.layer_norm("ln0", "blocks.0.ln0", None, eps, x)
    v_first = None
    for i in range(config["n_layer"]):
        p, k_ = f"L{i}.", f"blocks.{i}."
        att, ffn = k_ + "att.", k_ + "ffn."

        def proj(name: str, src, bias=None):
            site = "att." + name if "." not in name else name
            return b.thresholded_dense(p + site, i, site, src, thetas[(i, site)], w[k_ + site + ".weight"], bias)

        def lora(name: str, src, inner, bias=None):
            h = proj(name + "1", src)
            if inner is not None:
                h = b.add(inner(f"{p}att.{name}.inner", n=h.size, layer=i), h).out
            return proj(name + "2", h, bias)

        h = b.layer_norm(p + "ln1", k_ + "ln1", i, eps, x)
        # the model's x + (x_prev − x)·x_m is the token shift x·(1 − x_m) + x_prev·x_m
        s = b.add(ShiftMix(p + "att.shift", layer=i, **{f"mix_{m}": 1 - w[att + "x_" + m] for m in "rwkvag"}), h)
        r = proj("receptance", s.r)
        dec = b.add(Decay7(p + "att.decay", n=C, layer=i), lora("w", s.w, Tanh, w[att + "w0"])).out
        k = proj("key", s.k)
        v = proj("value", s.v)
        a = b.add(Sigmoid(p + "att.iclr", n=C, layer=i), lora("a", s.a, None, w[att + "a0"])).out
        g = lora("g", s.g, Sigmoid)
        kappa = b.add(HeadL2Norm(p + "att.kappa", n=C, n_head=H, k_k=w[att + "k_k"], layer=i), k).out
        k = b.add(Key7(p + "att.key_iclr", n=C, k_a=w[att + "k_a"], layer=i), k, a).out
        if i == 0:
            v_first = v
        else:
            gate = b.add(Sigmoid(p + "att.v_gate", n=C, layer=i), lora("v", s.v, None, w[att + "v0"])).out
            v = b.add(Lerp(p + "att.v_residual", n=C, layer=i), v, v_first, gate).out
        y = b.add(WKV7(p + "att.wkv", n=C, n_head=H, layer=i), r, dec, k, v, kappa, a).out
        y = b.add(GroupNorm(p + "att.ln_x", n=C, n_head=H, weight=w[att + "ln_x.weight"], bias=w[att + "ln_x.bias"],
                            eps=config["group_norm_eps"], layer=i), y).out
        bonus = b.add(Bonus7(p + "att.bonus", n=C, n_head=H, r_k=w[att + "r_k"], layer=i), r, k, v).out
        o = b.add(Add(p + "att.with_bonus", n=C, layer=i), y, bonus).out
        o = b.add(Multiply(p + "att.gate", n=C, layer=i), o, g).out
        x = b.add(Add(p + "att.residual", n=C, layer=i), x, proj("output", o)).out
        h = b.layer_norm(p + "ln2", k_ + "ln2", i, eps, x)
        s = b.add(ShiftMix(p + "ffn.shift", mix_k=1 - w[ffn + "x_k"], layer=i), h)
        f = b.add(SquaredReLU(p + "ffn.sqrelu", n=F_, layer=i), proj("ffn.key", s.k)).out
        x = b.add(Add(p + "ffn.residual", n=C, layer=i), x, proj("ffn.value", f)).out
    x = b.layer_norm("ln_out", "ln_out", None, eps, x)
    head_theta = thetas.get((config["n_layer"], "head"))
    if head_theta is not None:
        x = b.threshold("head.threshold", None, "head", x, head_theta, (config["n_layer"], "head"))
    b.add(b.dense("head", None, "head", w["head.weight"]), x)
    return ProcessGraph(b.procs, "head.out")


def build_rwkv7(model) -> ProcessGraph:
    weights = {k: _np(v) for k, v in model.state_dict().items()}
    return rwkv7_graph(weights, model.config_dict(), model.get_thetas(), getattr(model, "quantization", None),
                       model.theta_vectors())


def build_opt(model) -> ProcessGraph:
    cfg = model.config
    dec = model.hf.model.decoder
    if dec.project_in is not None or dec.project_out is not None:
        raise GraphError("OPT models with word_embed_proj_dim != hidden_size (project_in/out) are not supported by the graph builder yet")
    if not cfg.do_layer_norm_before:
        raise GraphError("OPT with do_layer_norm_before=False (OPT-350m) is not supported by the graph builder yet")
    if cfg.activation != "relu":
        raise GraphError(f"OPT activation {cfg.activation!r} is not supported by the graph builder (only relu)")
    w = {k.removeprefix("model.decoder."): _np(v) for k, v in model.hf.state_dict().items()}
    b = _Builder(w, getattr(model, "quantization", None), model.theta_vectors())
    theta = model.get_thetas()
    d, eps = cfg.d_model, dec.final_layer_norm.eps
    x = b.add(PositionalEmbedding("emb", weights=w["embed_tokens.weight"], positions=w["embed_positions.weight"],
                                  offset=dec.embed_positions.offset)).out
    for i, layer in enumerate(dec.layers):
        p, k_ = f"L{i}.", f"layers.{i}."
        at = k_ + "self_attn."
        h = b.layer_norm(p + "ln1", k_ + "self_attn_layer_norm", i, eps, x)
        qkv_w = np.concatenate([w[at + "q_proj.weight"], w[at + "k_proj.weight"], w[at + "v_proj.weight"]])
        qkv_b = np.concatenate([w[at + "q_proj.bias"], w[at + "k_proj.bias"], w[at + "v_proj.bias"]])
        qkv = b.thresholded_dense(p + "attn.qkv", i, "attn.qkv", h, theta[(i, "attn.qkv")], qkv_w, qkv_b)
        a = b.add(Attention(p + "attn", d=d, n_head=cfg.n_head, max_positions=cfg.max_positions,
                            scale=layer.self_attn.scaling, layer=i), qkv).out
        o = b.thresholded_dense(p + "attn.out", i, "attn.out", a, theta[(i, "attn.out")], w[at + "out_proj.weight"], w[at + "out_proj.bias"])
        x = b.add(Add(p + "attn.residual", n=d, layer=i), x, o).out
        h = b.layer_norm(p + "ln2", k_ + "final_layer_norm", i, eps, x)
        f = b.thresholded_dense(p + "ffn.fc1", i, "ffn.fc1", h, theta[(i, "ffn.fc1")], w[k_ + "fc1.weight"], w[k_ + "fc1.bias"])
        f = b.add(ReLU(p + "ffn.relu", n=cfg.d_ffn, layer=i), f).out
        f = b.thresholded_dense(p + "ffn.fc2", i, "ffn.fc2", f, theta[(i, "ffn.fc2")], w[k_ + "fc2.weight"], w[k_ + "fc2.bias"])
        x = b.add(Add(p + "ffn.residual", n=d, layer=i), x, f).out
    x = b.layer_norm("ln_out", "final_layer_norm", None, eps, x)
    b.add(Dense("head", weights=_np(model.hf.lm_head.weight)), x)
    return ProcessGraph(b.procs, "head.out")


BUILDERS = {"rwkv4": build_rwkv, "rwkv7": build_rwkv7, "opt": build_opt}


def build_graph(model, name: str | None = None) -> ProcessGraph:
    """The event-driven process graph of `model` with its current θ (apply a thresholds file to the model first:
    `eventllm.pipeline.load(spec, thresholds=…)` or `apply_thresholds`).

    >>> from eventllm.pipeline import load                       # doctest: +SKIP
    >>> graph = build_graph(load("zoo:rwkv4-tiny", thresholds="shipped").model)
    """
    if model.arch not in BUILDERS:
        raise GraphError(f"no graph builder for architecture {model.arch!r}; known: {', '.join(BUILDERS)}")
    graph = BUILDERS[model.arch](model)
    q = getattr(model, "quantization", None) or {}
    graph.meta.update({
        "arch": model.arch, "model": name, "fingerprint": model.fingerprint(), "config": model.config_dict(),
        "projections": list(model.PROJECTIONS), "n_layer": model.n_layer,
        "precision": {"weight_bits": q.get("weight_bits", 16), "method": q.get("method"), "event_bits": q.get("event_bits", 16),
                      "projections": q.get("projections", [])},
    })
    return graph
