"""Builders: a torch model (with its thresholds) → an event-driven process graph.

`build_graph(model)` exports the weights to numpy and wires one process per operation. It needs the torch
model, so it is the one module of `eventllm.process` that touches torch objects — without importing torch
itself: the rest of the package (and a saved graph) runs without it.

Process names: `emb`, (`ln0`), then per layer `L{i}.<part>` — e.g. `L0.att.key.threshold` → `L0.att.key`
(the Dense of that projection) — and finally `ln_out` → `head`, whose out-port is the graph's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.core import OutPort, Process
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import (
    WKV, Add, Attention, Dense, Embedding, LayerNorm, Multiply, PositionalEmbedding, ReLU, ShiftMix, Sigmoid,
    SquaredReLU, Threshold,
)


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


class _Builder:
    """Collects processes in data-flow order and wires them."""

    def __init__(self):
        self.procs: list[Process] = []

    def add(self, proc: Process, *feeds: OutPort) -> Process:
        """Add `proc` and connect `feeds` to its in-ports, in declaration order."""
        ins = list(proc.in_ports.values())
        if proc.kind in ("embedding", "positional_embedding"):
            ins = []
        if len(feeds) != len(ins):
            raise GraphError(f"{proc.name}: {len(ins)} in-ports but {len(feeds)} feeds")
        for src, dst in zip(feeds, ins):
            src.connect(dst)
        self.procs.append(proc)
        return proc

    def thresholded_dense(self, name: str, layer: int, projection: str, x: OutPort, theta: float, weight, bias=None) -> OutPort:
        t = self.add(Threshold(f"{name}.threshold", n=x.size, theta=theta, layer=layer, projection=projection), x)
        d = self.add(Dense(name, weights=_np(weight), bias=None if bias is None else _np(bias), layer=layer,
                           projection=projection), t.out)
        return d.out


def _layer_norm(name: str, ln, layer: int | None) -> LayerNorm:
    return LayerNorm(name, weight=_np(ln.weight), bias=_np(ln.bias), eps=ln.eps, layer=layer)


def build_rwkv(model) -> ProcessGraph:
    b = _Builder()
    cfg = model.config
    theta = model.get_thetas()
    x = b.add(Embedding("emb", weights=_np(model.emb.weight))).out
    x = b.add(_layer_norm("ln0", model.blocks[0].ln0, None), x).out
    for i, block in enumerate(model.blocks):
        p = f"L{i}."
        att, ffn = block.att, block.ffn
        h = b.add(_layer_norm(p + "ln1", block.ln1, i), x).out
        s = b.add(ShiftMix(p + "att.shift", mix_k=_np(att.time_mix_k), mix_v=_np(att.time_mix_v),
                           mix_r=_np(att.time_mix_r), layer=i), h)
        k = b.thresholded_dense(p + "att.key", i, "att.key", s.k, theta[(i, "att.key")], att.key.weight)
        v = b.thresholded_dense(p + "att.value", i, "att.value", s.v, theta[(i, "att.value")], att.value.weight)
        r = b.thresholded_dense(p + "att.receptance", i, "att.receptance", s.r, theta[(i, "att.receptance")], att.receptance.weight)
        r = b.add(Sigmoid(p + "att.sigmoid", n=cfg.d_attention, layer=i), r).out
        wkv = b.add(WKV(p + "att.wkv", time_decay=_np(att.time_decay), time_first=_np(att.time_first), layer=i), k, v).out
        g = b.add(Multiply(p + "att.gate", n=cfg.d_attention, layer=i), r, wkv).out
        o = b.thresholded_dense(p + "att.output", i, "att.output", g, theta[(i, "att.output")], att.output.weight)
        x = b.add(Add(p + "att.residual", n=cfg.d_model, layer=i), x, o).out
        h = b.add(_layer_norm(p + "ln2", block.ln2, i), x).out
        s = b.add(ShiftMix(p + "ffn.shift", mix_k=_np(ffn.time_mix_k), mix_r=_np(ffn.time_mix_r), layer=i), h)
        k = b.thresholded_dense(p + "ffn.key", i, "ffn.key", s.k, theta[(i, "ffn.key")], ffn.key.weight)
        k = b.add(SquaredReLU(p + "ffn.sqrelu", n=cfg.d_ffn, layer=i), k).out
        v = b.thresholded_dense(p + "ffn.value", i, "ffn.value", k, theta[(i, "ffn.value")], ffn.value.weight)
        r = b.thresholded_dense(p + "ffn.receptance", i, "ffn.receptance", s.r, theta[(i, "ffn.receptance")], ffn.receptance.weight)
        r = b.add(Sigmoid(p + "ffn.sigmoid", n=cfg.d_model, layer=i), r).out
        g = b.add(Multiply(p + "ffn.gate", n=cfg.d_model, layer=i), r, v).out
        x = b.add(Add(p + "ffn.residual", n=cfg.d_model, layer=i), x, g).out
    x = b.add(_layer_norm("ln_out", model.ln_out, None), x).out
    b.add(Dense("head", weights=_np(model.head.weight)), x)
    return ProcessGraph(b.procs, "head.out")


def build_opt(model) -> ProcessGraph:
    cfg = model.config
    dec = model.hf.model.decoder
    if dec.project_in is not None or dec.project_out is not None:
        raise GraphError("OPT models with word_embed_proj_dim != hidden_size (project_in/out) are not supported by the graph builder yet")
    if not cfg.do_layer_norm_before:
        raise GraphError("OPT with do_layer_norm_before=False (OPT-350m) is not supported by the graph builder yet")
    if cfg.activation != "relu":
        raise GraphError(f"OPT activation {cfg.activation!r} is not supported by the graph builder (only relu)")
    b = _Builder()
    theta = model.get_thetas()
    d = cfg.d_model
    x = b.add(PositionalEmbedding("emb", weights=_np(dec.embed_tokens.weight), positions=_np(dec.embed_positions.weight),
                                  offset=dec.embed_positions.offset)).out
    for i, layer in enumerate(dec.layers):
        p = f"L{i}."
        at = layer.self_attn
        h = b.add(_layer_norm(p + "ln1", layer.self_attn_layer_norm, i), x).out
        qkv_w = np.concatenate([_np(at.q_proj.weight), _np(at.k_proj.weight), _np(at.v_proj.weight)])
        qkv_b = np.concatenate([_np(at.q_proj.bias), _np(at.k_proj.bias), _np(at.v_proj.bias)])
        t = b.add(Threshold(p + "attn.qkv.threshold", n=d, theta=theta[(i, "attn.qkv")], layer=i, projection="attn.qkv"), h)
        qkv = b.add(Dense(p + "attn.qkv", weights=qkv_w, bias=qkv_b, layer=i, projection="attn.qkv"), t.out).out
        a = b.add(Attention(p + "attn", d=d, n_head=cfg.n_head, max_positions=cfg.max_positions, scale=at.scaling, layer=i), qkv).out
        o = b.thresholded_dense(p + "attn.out", i, "attn.out", a, theta[(i, "attn.out")], at.out_proj.weight, at.out_proj.bias)
        x = b.add(Add(p + "attn.residual", n=d, layer=i), x, o).out
        h = b.add(_layer_norm(p + "ln2", layer.final_layer_norm, i), x).out
        f = b.thresholded_dense(p + "ffn.fc1", i, "ffn.fc1", h, theta[(i, "ffn.fc1")], layer.fc1.weight, layer.fc1.bias)
        f = b.add(ReLU(p + "ffn.relu", n=cfg.d_ffn, layer=i), f).out
        f = b.thresholded_dense(p + "ffn.fc2", i, "ffn.fc2", f, theta[(i, "ffn.fc2")], layer.fc2.weight, layer.fc2.bias)
        x = b.add(Add(p + "ffn.residual", n=d, layer=i), x, f).out
    x = b.add(_layer_norm("ln_out", dec.final_layer_norm, None), x).out
    b.add(Dense("head", weights=_np(model.hf.lm_head.weight)), x)
    return ProcessGraph(b.procs, "head.out")


BUILDERS = {"rwkv4": build_rwkv, "opt": build_opt}


def build_graph(model, thresholds: str | Path | None = None, name: str | None = None) -> ProcessGraph:
    """The event-driven process graph of `model` with its current θ (or those of a thresholds file).

    >>> from eventllm.models.registry import load_model           # doctest: +SKIP
    >>> graph = build_graph(load_model("zoo:rwkv4-tiny").model, "thr.json")
    """
    if thresholds is not None:
        from eventllm.sparsity.thresholds import apply_thresholds

        apply_thresholds(model, thresholds)
    if model.arch not in BUILDERS:
        raise GraphError(f"no graph builder for architecture {model.arch!r}; known: {', '.join(BUILDERS)}")
    graph = BUILDERS[model.arch](model)
    graph.meta.update({
        "arch": model.arch, "model": name, "fingerprint": model.fingerprint(), "config": model.config_dict(),
        "thresholds": str(thresholds) if thresholds is not None else None,
        "projections": list(model.PROJECTIONS), "n_layer": model.n_layer,
    })
    return graph
