"""Low-bit weights after training (no retraining): symmetric integers with one scale per output channel.

For a projection W [out, in] and b bits (qmax = 2^(b-1) − 1):

    scale_o = α_o · max_i |W[o, i]| / qmax          Q[o, i] = clamp(round(W[o, i] / scale_o), −qmax, qmax)

and the layer computes y = scale ⊙ (Q · x). `rtn` (round to nearest) takes α = 1; `mse` searches α per output
channel on a grid in [0.5, 1] for the smallest squared weight error ‖W − scale·Q‖² (clipping the largest weights
buys finer steps for all the others; better than round-to-nearest at 4 bits, about equal at 8).

The torch model runs them as fake quantisation: each quantised nn.Linear's weight becomes scale·Q (float), so
perplexity, calibration and every torch path see the integer model; `model.quantization` records the bits, the
method and each projection's scales, and the graph builder stores Q (int8 arrays) and the scales.

Events can be low-bit too (`event_bits = 8`): each threshold site's surviving values are sent as int8 with one
scale per token (its largest magnitude / 127), the graded spikes of an integer core; the receiving Dense then
multiplies int8 by int8 (SENECA's 2×INT8 instruction) and scales each output once. See
`ActivationThreshold.event_bits`.

>>> w = torch.tensor([[0.5, -1.0, 0.25]])
>>> q, s = quantize_weight(w, bits=8)
>>> q.tolist(), round(float(s[0]) * 127, 6)
([[64, -127, 32]], 1.0)
"""

from __future__ import annotations

import torch

from eventllm.errors import ConfigError
from eventllm.models.threshold import ActivationThreshold

WEIGHT_BITS = (16, 8, 4)  # 16 = the model as trained (bf16/fp16 words); 8 and 4 = integers
EVENT_BITS = (16, 8)
METHODS = ("rtn", "mse")
HEAD = "head"  # the name of the output projection in `projections` selections
EMB = "emb"  # the token embedding table (a lookup: one scale per row, i.e. per token)


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


@torch.no_grad()
def quantize_weight(w: torch.Tensor, bits: int, method: str = "rtn") -> tuple[torch.Tensor, torch.Tensor]:
    """(Q as int8 [out, in], scale [out] float32) of a weight matrix, per output channel (see the module doc)."""
    if bits not in (8, 4):
        raise ConfigError(f"weight bits {bits} cannot be quantised: use 8 or 4 (16 keeps the trained weights)")
    if method not in METHODS:
        raise ConfigError(f"unknown quantisation method {method!r}; use one of {', '.join(METHODS)}")
    w = w.detach().float()
    m = qmax(bits)
    amax = w.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    if method == "rtn":
        alpha = torch.ones_like(amax)
    else:
        grid = torch.linspace(0.5, 1.0, 51, device=w.device)
        best_err = torch.full_like(amax, float("inf"))
        alpha = torch.ones_like(amax)
        for a in grid:
            s = (a * amax / m)[:, None]
            err = (w - (w / s).round().clamp(-m, m) * s).square().sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            alpha = torch.where(better, a, alpha)
    scale = (alpha * amax / m).float()
    q = (w / scale[:, None]).round().clamp(-m, m).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


def check_bits(weight_bits: int, event_bits: int = 16) -> None:
    if weight_bits not in WEIGHT_BITS:
        raise ConfigError(f"`weight_bits` {weight_bits} is not supported; use one of {', '.join(map(str, WEIGHT_BITS))}")
    if event_bits not in EVENT_BITS:
        raise ConfigError(f"`event_bits` {event_bits} is not supported; use one of {', '.join(map(str, EVENT_BITS))}")


@torch.no_grad()
def quantize_model(model, weight_bits: int = 8, method: str = "rtn", projections: list[str] | None = None,
                   event_bits: int = 16) -> dict:
    """Fake-quantise `model` in place: the selected projections' weights (every projection of every layer and
    the head by default; `projections` names a subset, "head" for the head) become scale·Q; with event_bits = 8
    every threshold site sends int8 events. Returns `model.quantization` (bits, method, scales by site).

    The model's fingerprint stays the one of its trained weights, so its thresholds files still apply."""
    check_bits(weight_bits, event_bits)
    if getattr(model, "quantization", None):
        raise ConfigError("this model is quantised already; load it again to quantise it another way")
    linears = model.projection_linears()
    table = getattr(model, "emb", None) if not getattr(model, "head_tied", False) else None
    known = list(model.PROJECTIONS) + [HEAD] + ([EMB] if table is not None else [])
    chosen = list(known) if projections is None else list(projections)
    bad = [p for p in chosen if p not in known]
    if bad:
        raise ConfigError(f"`quantize` {bad[0]!r} is not a projection of {model.arch}; choose from {', '.join(known)}")
    fingerprint = model.fingerprint()
    scales: dict[str, list[float]] = {}
    model._integer_weights = []  # (tensor holding scale·Q now, Q, scale): what a model file stores in their place

    def quantize_in_place(weight: torch.Tensor, key: str) -> None:
        q, scale = quantize_weight(weight, weight_bits, method)
        weight.copy_(dequantize(q, scale).to(weight.dtype))
        scales.setdefault(key, []).extend(scale.tolist())
        model._integer_weights.append((weight, q.cpu(), scale.cpu()))

    if weight_bits < 16:
        for (layer, proj), mods in linears.items():
            if proj not in chosen or (proj == HEAD and getattr(model, "head_tied", False)):
                continue
            for mod in mods:
                quantize_in_place(mod.weight, _site_key(layer, proj))
        if table is not None and EMB in chosen:  # rows are tokens: a per-row scale is the per-channel one of a lookup
            quantize_in_place(table.weight, EMB)
    # every site, the head's too while it is off: a thresholds file applied later may turn it on
    for s in model.modules():
        if isinstance(s, ActivationThreshold):
            s.event_bits = event_bits if event_bits < 16 else None
    model.quantization = {"weight_bits": weight_bits, "method": method if weight_bits < 16 else None,
                          "event_bits": event_bits, "projections": [p for p in chosen if _quantised(scales, p)],
                          "scales": scales}
    model._fingerprint = fingerprint
    return model.quantization


def _site_key(layer: int | None, proj: str) -> str:
    return proj if layer is None else f"{layer}.{proj}"


def _quantised(scales: dict, proj: str) -> bool:
    return any(k == proj or k.endswith("." + proj) for k in scales)


def apply_precision(model, precision: dict | None) -> None:
    """Fake-quantise `model` as `precision` says (keys weight_bits, event_bits, method, projections, as a thresholds
    file's meta or a graph's meta hold them); nothing when it is empty or all 16-bit."""
    p = precision or {}
    wbits, ebits = p.get("weight_bits") or 16, p.get("event_bits") or 16
    have = getattr(model, "quantization", None)
    if have:  # a model whose file holds integer weights runs at their precision, and only at it
        if p and (have["weight_bits"], have["event_bits"]) != (wbits, ebits):
            raise ConfigError(f"this model's file holds {have['weight_bits']}-bit weights with {have['event_bits']}-bit "
                              f"events, not {wbits}/{ebits}: run it at its own precision (drop `weight_bits`/`event_bits`)")
        return
    if wbits < 16 or ebits < 16:
        quantize_model(model, wbits, p.get("method") or "mse", p.get("projections") or None, ebits)


def describe(model) -> dict:
    """The precision settings of a model, for reports and JSON: weight bits, method, event bits, projections."""
    q = getattr(model, "quantization", None)
    if not q:
        return {"weight_bits": 16, "method": None, "event_bits": 16, "projections": []}
    return {k: v for k, v in q.items() if k != "scales"}
