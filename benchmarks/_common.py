"""Shared set-up for the benchmarks: the zoo graphs and an RWKV-4 430M-shaped model driven at measured sparsity."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/NAME.py` without an installed eventllm: the repository's packages
    sys.path.append(str(ROOT))

from eventllm.data import SAMPLE_TEXT  # noqa: E402


def zoo(name: str):
    """(loaded model, graph with the shipped calibrated θ, sample tokens)."""
    from eventllm import pipeline

    loaded = pipeline.load(f"zoo:{name}", thresholds="shipped")
    graph = pipeline.build(loaded.model, loaded.name)
    return loaded, graph, loaded.tokenizer.encode(SAMPLE_TEXT)


def per_projection_sparsity(graph, tokens) -> dict[str, float]:
    """Zero fraction of every threshold output, averaged per projection over layers (executor run)."""
    from eventllm.process.executor import Executor

    ex = Executor(graph)
    ex.run(tokens)
    out: dict[str, list[float]] = {}
    for p in graph:
        if p.kind == "threshold":
            frac = 1 - ex.counts.per_process[p.name]["events_out"] / (p.out_ports["out"].size * len(tokens))
            out.setdefault(p.attrs["projection"], []).append(frac)
    return {k: float(np.mean(v)) for k, v in out.items()}


def set_thresholds_for_sparsity(graph, tokens, target: dict[str, float]) -> None:
    """Give every threshold of `graph` the θ at which its input has the target zero fraction on `tokens`
    (the |x| quantile), one layer at a time so that each layer sees the thresholded earlier layers (within a
    layer, the inputs are taken with that layer's θ still 0: the sparsity reached is measured afterwards)."""
    from eventllm.process.executor import Executor

    layers = sorted({p.layer for p in graph if p.kind == "threshold"})
    for p in graph:
        if p.kind == "threshold":
            p.vars["theta"].value[...] = 0.0
    for layer in layers:
        sites = [p for p in graph if p.kind == "threshold" and p.layer == layer]
        sources = [p.in_ports["inp"].sources[0].src.path for p in sites]
        ex = Executor(graph, probes=sorted(set(sources)))
        ex.run(tokens)
        for p, src in zip(sites, sources):
            q = target[p.attrs["projection"]]
            p.vars["theta"].value[...] = np.quantile(np.abs(ex.probed(src)).ravel(), q) if q > 0 else 0.0


def rwkv_430m(seed: int = 0):
    """An RWKV-4 430M-shaped torch model (24 layers, d_model 1024, vocab 50277) with random weights."""
    from eventllm.models import RWKV, RWKVConfig

    return RWKV(RWKVConfig(vocab_size=50277, d_model=1024, n_layer=24)).randomize(seed=seed).eval()
