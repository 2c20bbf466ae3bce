"""Activation sparsity: the fraction of exact zeros in every projection input, and the share of
multiply-accumulates that zero inputs let an event-driven processor skip."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from eventllm.models.base import CausalLM
from eventllm.models.threshold import ActivationThreshold, SiteObserver


class SparsityMeter(SiteObserver):
    """Counts zeros in every projection input while attached to a model.

    >>> with SparsityMeter(model) as meter:        # doctest: +SKIP
    ...     model(idx)
    >>> meter.zero_fraction()[(0, "ffn.value")]    # doctest: +SKIP
    """

    def __init__(self, model: CausalLM):
        self.model = model
        self.elements: dict[tuple[int, str], int] = defaultdict(int)
        self.zeros: dict[tuple[int, str], int] = defaultdict(int)

    def _observe(self, site: ActivationThreshold, x: torch.Tensor, y: torch.Tensor) -> None:
        key = (site.layer, site.projection)
        self.elements[key] += y.numel()
        self.zeros[key] += int((y == 0).sum())

    def zero_fraction(self) -> dict[tuple[int, str], float]:
        return {k: self.zeros[k] / self.elements[k] for k in self.elements if self.elements[k]}


@dataclass
class SparsityReport:
    """Zero fractions per (layer, projection), with the model's projection sizes to weight them."""

    projections: tuple[str, ...]
    shapes: dict[str, tuple[int, int]]
    n_layer: int
    fractions: dict[tuple[int, str], float] = field(default_factory=dict)

    @classmethod
    def from_meter(cls, model: CausalLM, meter: SparsityMeter) -> "SparsityReport":
        return cls(tuple(model.PROJECTIONS), model.site_shapes(), model.n_layer, meter.zero_fraction())

    @property
    def head(self) -> float | None:
        """The zero fraction at the head's threshold site (None when it is off)."""
        return self.fractions.get((self.n_layer, "head"))

    def average(self) -> float:
        """Mean zero fraction over all projection inputs of all layers (each site counts once)."""
        return sum(self.fractions.values()) / len(self.fractions) if self.fractions else 0.0

    def mac_skipped(self) -> float:
        """Share of the projections' multiply-accumulates whose input is zero (weighted by in × out)."""
        total = skipped = 0.0
        for (layer, proj), f in self.fractions.items():
            macs = self.shapes[proj][0] * self.shapes[proj][1]
            total += macs
            skipped += f * macs
        return skipped / total if total else 0.0

    def per_layer(self) -> list[dict[str, float | None]]:
        """Zero fraction per projection of each layer; None where the layer has no such site (RWKV-7's layer 0 has
        no value-residual LoRA)."""
        return [{p: self.fractions.get((i, p)) for p in self.projections} for i in range(self.n_layer)]

    def per_projection(self) -> dict[str, float]:
        """Mean zero fraction of each projection over the layers that have its site."""
        out = {}
        for p in self.projections:
            seen = [self.fractions[(i, p)] for i in range(self.n_layer) if (i, p) in self.fractions]
            out[p] = sum(seen) / len(seen) if seen else 0.0
        return out


def sparsity_json(natural: SparsityReport, thresholded: SparsityReport) -> dict:
    """The `sparsity` block of `eventllm evaluate --json`. The headline is `mac_weighted` (each site weighted by
    the MACs of the projection it feeds, as the paper reports); `site_mean` (each site once) stands beside it
    and is also kept under the older keys `natural` / `thresholded` / `ratio`."""
    nat_m, thr_m = natural.mac_skipped(), thresholded.mac_skipped()
    return {
        "mac_weighted": {"natural": nat_m, "thresholded": thr_m, "ratio": thr_m / nat_m if nat_m else None},
        "site_mean": {"natural": natural.average(), "thresholded": thresholded.average(),
                      "ratio": thresholded.average() / natural.average() if natural.average() else None},
        "natural": natural.average(),
        "thresholded": thresholded.average(),
        "ratio": thresholded.average() / natural.average() if natural.average() else None,
        "mac_skipped": {"natural": natural.mac_skipped(), "thresholded": thresholded.mac_skipped()},
        "head": {"natural": natural.head, "thresholded": thresholded.head} if thresholded.head is not None else None,
        "per_projection": {p: {"natural": natural.per_projection()[p], "thresholded": thresholded.per_projection()[p]} for p in natural.projections},
        "per_layer": [
            {p: {"natural": n[p], "thresholded": t[p]} for p in natural.projections}
            for n, t in zip(natural.per_layer(), thresholded.per_layer())
        ],
    }
