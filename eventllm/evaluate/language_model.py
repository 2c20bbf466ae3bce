"""Perplexity and activation sparsity of a (thresholded) model on a token stream, in one call."""

from __future__ import annotations

from eventllm.evaluate.perplexity import bits_per_byte, perplexity
from eventllm.models.base import CausalLM
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport, sparsity_json


def evaluate_stream(model: CausalLM, ids: list[int], progress: bool = False, byte_lengths=None) -> dict:
    """Perplexity (and bits per byte, given the tokenizer's `byte_lengths`) with the model's current
    thresholds, and sparsity natural (θ = 0) vs thresholded.

    When any θ is non-zero the stream is run twice: once thresholded, once dense for the natural
    sparsity and the dense perplexity (`ppl_dense`), so `ppl_increase` is measured on the same tokens.
    """
    thetas = model.get_thetas()
    with SparsityMeter(model) as meter:
        res = perplexity(model, ids, progress=progress, desc="thresholded" if any(thetas.values()) else "dense")
    thresholded = SparsityReport.from_meter(model, meter)
    if any(thetas.values()):
        model.set_thetas(0.0)
        try:
            with SparsityMeter(model) as meter0:
                dense = perplexity(model, ids, progress=progress, desc="dense")
        finally:
            model.set_thetas(thetas)
        natural = SparsityReport.from_meter(model, meter0)
    else:
        dense, natural = res, thresholded
    out = {
        "ppl": res.ppl,
        "ppl_dense": dense.ppl,
        "ppl_increase": res.ppl / dense.ppl - 1.0,
        "tokens": res.tokens,
    }
    if byte_lengths is not None:
        out["bits_per_byte"] = bits_per_byte(res, ids, byte_lengths)
        out["bits_per_byte_dense"] = bits_per_byte(dense, ids, byte_lengths)
    return out | {"sparsity": sparsity_json(natural, thresholded)}


def sparsity_table(result: dict, projections: tuple[str, ...]) -> list[list[str]]:
    """Rows of `layer | natural → thresholded` per projection, then the per-projection mean."""
    from eventllm.report import pct

    rows = []
    for i, layer in enumerate(result["sparsity"]["per_layer"]):
        rows.append([str(i)] + [f"{pct(layer[p]['natural'])} → {pct(layer[p]['thresholded'])}" if layer[p]["natural"] is not None
                                else "–" for p in projections])
    mean = result["sparsity"]["per_projection"]
    rows.append(["mean"] + [f"{pct(mean[p]['natural'])} → {pct(mean[p]['thresholded'])}" for p in projections])
    return rows
