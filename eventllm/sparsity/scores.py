"""Per-neuron scales measured on calibration data: the calibrated per-channel variant of the thresholds.

A site with per-neuron thresholds passes input i where |x_i|·g_i > θ (`CausalLM.set_scores`). WINA takes g from the
weights (‖W[:, i]‖); here g comes from the loss: zeroing x_i changes the next-token loss by about x_i·∂L/∂x_i (first
order), so g_i = √E[(∂L/∂x_i)²] over calibration tokens of the dense model ranks each input by the loss its removal
costs. g is divided by its mean over the site, so that θ keeps the scale of |x| (θ = 1 ≈ |x| > 1 for an average input).

>>> scales = gradient_scales(model, ids)            # {(layer, projection): float32 vector}
>>> model.set_scores("gradient", scales)            # then `calibrate` searches θ as for any scores
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eventllm.errors import DataError
from eventllm.models.base import CausalLM
from eventllm.models.threshold import SiteObserver


class _InputGrads(SiteObserver):
    """While attached: keeps each site's input of the last forward pass, to take the loss's gradient at it."""

    def __init__(self, model: CausalLM):
        self.model = model
        self.inputs: dict[tuple[int, str], torch.Tensor] = {}

    def _observe(self, site, x: torch.Tensor, y: torch.Tensor) -> None:
        self.inputs[(site.layer, site.projection)] = x


def gradient_scales(model: CausalLM, batch: torch.Tensor, micro_batch: int | None = None, progress: bool = False) -> dict:
    """g_i = √mean((∂CE/∂x_i)²) / its site mean at every threshold site of `model` (dense while measuring: θ = 0, no
    per-neuron scales, events at full precision — rounding them to low-bit events would stop the gradient; each site's
    state is restored after), from windows `batch` [B, T + 1] of token ids.
    The cross-entropy is summed over tokens, so each gradient is one token's own sensitivity. `micro_batch` windows
    go through each backward pass (default: about 512 tokens' worth; memory grows with it, speed hardly)."""
    from tqdm import tqdm

    if batch.ndim != 2 or batch.shape[1] < 2:
        raise DataError(f"gradient scales need windows of at least 2 tokens, got a batch of shape {tuple(batch.shape)}")
    micro_batch = micro_batch or max(1, 512 // (batch.shape[1] - 1))
    kind, was_training = model.scores, model.training
    sites = {s: (s.theta, s.channel_scale, s.event_bits) for s in model.threshold_sites()}
    model.eval()
    for s in sites:
        s.theta, s.channel_scale, s.event_bits = 0.0, None, None
    params = [p for p in model.parameters()]
    grad_flags = [p.requires_grad for p in params]
    sq: dict[tuple[int, str], torch.Tensor] = {}
    count = 0
    try:
        for p in params:  # the inputs' gradients need the graph; the weights' own gradients are never taken
            p.requires_grad_(True)
        with torch.enable_grad(), _InputGrads(model) as rec:
            for b in tqdm(range(0, batch.shape[0], micro_batch), desc="gradient scales", unit="batch", disable=not progress):
                x = batch[b : b + micro_batch]
                rec.inputs = {}
                logits, _ = model(x[:, :-1])
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
                if not math.isfinite(loss.item()):
                    raise DataError("the loss is NaN or infinite while measuring gradient scales; the model or the data is broken")
                keys = list(rec.inputs)
                grads = torch.autograd.grad(loss, [rec.inputs[k] for k in keys])
                for k, g in zip(keys, grads):
                    g2 = g.detach().reshape(-1, g.shape[-1]).double().square().sum(0)
                    sq[k] = sq[k] + g2 if k in sq else g2
                count += x[:, 1:].numel()
    finally:
        for p, flag in zip(params, grad_flags):
            p.requires_grad_(flag)
        model.train(was_training)
        for s, (theta, scale, bits) in sites.items():
            s.theta, s.channel_scale, s.event_bits = theta, scale, bits
        model.scores = kind
    out = {}
    for k, v in sq.items():
        g = (v / count).sqrt()
        mean = float(g.mean())
        if not mean > 0:
            raise DataError(f"layer {k[0]} {k[1]}: the loss does not depend on this site's inputs on the calibration tokens; "
                            "calibrate on more text")
        # an input the loss never depended on (g = 0) gets the smallest positive scale: its θ_i is large, not infinite
        out[k] = (g / mean).float().clamp_min(torch.finfo(torch.float32).tiny)
    return out
