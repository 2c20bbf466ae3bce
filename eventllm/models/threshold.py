"""The threshold function placed before every linear projection: T_θ(x) = x if |x| > θ else 0."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# An observer sees each projection input before and after thresholding (used by the sparsity
# statistics and by calibration); it must not change the tensors.
Observer = Callable[["ActivationThreshold", torch.Tensor, torch.Tensor], None]


class ActivationThreshold(nn.Module):
    """Zeroes the entries of a projection input whose magnitude is at most `theta`.

    One instance sits before each linear projection of each layer; `layer` and `projection` name the site
    (e.g. layer 3, "ffn.key"). With theta = 0 the input passes through untouched, so the dense model is
    reproduced bit for bit (a value equal to 0 stays 0 either way).

    >>> t = ActivationThreshold(0, "att.key", theta=0.5)
    >>> t(torch.tensor([0.2, -0.7, 0.5, 1.0])).tolist()
    [0.0, -0.699999988079071, 0.0, 1.0]
    """

    def __init__(self, layer: int, projection: str, theta: float = 0.0):
        super().__init__()
        self.layer = layer
        self.projection = projection
        self.theta = float(theta)
        # Calibration only: keep the `keep` fraction of largest-magnitude entries of each token instead of
        # thresholding (the Top-K stage of the paper's search); None in normal use.
        self.keep: float | None = None
        self.observer: Observer | None = None
        # Training-based baseline only: (raw parameter ρ, surrogate spike function); θ = softplus(ρ) is learned
        # through the surrogate gradient of the Heaviside step (`eventllm.sparsity.train_baseline`).
        self.surrogate: tuple[torch.nn.Parameter, Callable] | None = None
        self.pass_fraction: torch.Tensor | None = None
        # Low-bit events (`eventllm.models.quantize`): 8 sends each token's surviving values as int8 with one scale
        # per token (max |y| / 127); None sends them as they are.
        self.event_bits: int | None = None
        # Per-neuron thresholds from weight-aware scores (`CausalLM.set_scores("wina")`): g_i = ‖W[:, i]‖ of the
        # projection(s) this site feeds; input i passes where |x_i| > θ / g_i (score |x_i|·g_i > θ). None: θ for all.
        self.channel_scale: torch.Tensor | None = None

    def theta_bound(self) -> torch.Tensor | float:
        """What |x| is compared with: θ, or the per-neuron vector θ / g (float32, as the process graph holds it)."""
        if self.channel_scale is None:
            return self.theta
        return torch.tensor(self.theta, dtype=torch.float32, device=self.channel_scale.device) / self.channel_scale

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The magnitude each input is ranked by: |x|, or |x|·g with per-neuron thresholds."""
        return x.abs() if self.channel_scale is None else x.abs() * self.channel_scale.to(x.device)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """T_θ(x) (or Top-K during calibration) without telling the observer (for a projection sharing this input)."""
        y = self._threshold(x)
        return y if self.event_bits is None else quantize_events(y, self.event_bits)

    def _threshold(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep is not None:
            return top_k_per_token(x, self.keep, self.scores(x) if self.channel_scale is not None else None)
        if self.surrogate is not None:
            rho, spike = self.surrogate
            # forward: exactly T_θ (the spike is the step |x| > θ); backward: the surrogate gradient reaches θ
            mask = spike(x.abs() - F.softplus(rho))
            self.pass_fraction = mask.mean()  # differentiable; its value is the hard fraction that passed
            return x * mask
        if self.theta == 0.0:
            return x
        bound = self.theta_bound()
        if isinstance(bound, torch.Tensor):
            bound = bound.to(x.device)
        return torch.where(x.abs() > bound, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.apply(x)
        if self.observer is not None:
            self.observer(self, x, y)
        return y

    def extra_repr(self) -> str:
        per = ", per-neuron (θ / ‖W[:, i]‖)" if self.channel_scale is not None else ""
        return f"layer={self.layer}, projection={self.projection!r}, theta={self.theta:g}{per}"



def quantize_events(y: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Each vector along the last axis as `bits`-bit integers times one scale (its largest magnitude / qmax), in
    float: round(y / s) · s, computed in float32 as the process graph's Threshold does (zeros stay zeros)."""
    m = (1 << (bits - 1)) - 1
    yf = y.float()
    s = yf.abs().amax(dim=-1, keepdim=True) / m
    q = torch.where(s > 0, torch.round(yf / torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(yf))
    return (q * s).to(y.dtype)


def top_k_per_token(x: torch.Tensor, keep: float, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the int(n · keep) largest-magnitude entries (largest `scores`, when given) of every vector along the
    last axis; zero the rest."""
    n = x.shape[-1]
    k = int(n * keep)
    if k >= n:
        return x
    if k <= 0:
        return torch.zeros_like(x)
    idx = (x.abs() if scores is None else scores).topk(k, dim=-1).indices
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


class SiteObserver:
    """Base of the objects that watch every threshold site of `self.model` while used as a context manager
    (`with Watcher(model) as w: model(x)`): `_observe(site, x, y)` sees each site's input and output."""

    model: nn.Module

    def _observe(self, site: ActivationThreshold, x: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def __enter__(self):
        for s in self.model.threshold_sites():
            s.observer = self._observe
        return self

    def __exit__(self, *exc) -> None:
        for s in self.model.threshold_sites():
            s.observer = None
