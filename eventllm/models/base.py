"""What every eventllm language model offers, whatever its architecture."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from eventllm.models.threshold import ActivationThreshold


class CausalLM(nn.Module):
    """A causal language model with a threshold before every linear projection.

    Subclasses set `arch` (the name written in files), `recurrent` (True when the model carries a
    fixed-size state from token to token) and `PROJECTIONS` (the projection names of one layer, in data-flow
    order), and implement `forward(idx, state) -> (logits, state)`, `projection_shapes()` and `init_state()`.
    """

    arch: str = ""
    recurrent: bool = False
    PROJECTIONS: tuple[str, ...] = ()
    config: Any
    hf_model_type: str | None = None  # the Hugging Face `model_type` this family reads, if any

    # --- what loading and training ask the family ------------------------------------------------------
    @classmethod
    def config_from_hf(cls, hf: dict):
        """This family's config from a Hugging Face config.json (a dict)."""
        raise NotImplementedError(f"{cls.__name__} reads no Hugging Face config")

    @classmethod
    def tensors_from_hf(cls, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A Hugging Face checkpoint's tensors under this family's parameter names."""
        return tensors

    def weights_module(self) -> nn.Module:
        """The module whose state dict the checkpoint's tensors fill (and whose parameters are the model's)."""
        return self

    def complete_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint may leave out (tied weights), filled in."""
        return tensors

    def set_dropout(self, p: float) -> None:
        """Dropout on the block outputs during training."""
        self.dropout = p

    def n_parameters(self) -> int:
        return sum(t.numel() for t in self.weights_module().parameters())

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        """The tensors an eventllm .safetensors file holds."""
        return self.state_dict()

    # --- thresholds -------------------------------------------------------------------------------------
    # the optional threshold before the output head: site (n_layer, "head"), off unless turned on
    HEAD_SITE = "head"
    head_threshold: bool = False

    def threshold_sites(self) -> list[ActivationThreshold]:
        """Every threshold of the model, layer by layer, in `PROJECTIONS` order (then the head's, when it is on)."""
        sites = [m for m in self.modules() if isinstance(m, ActivationThreshold)
                 and (m.projection != self.HEAD_SITE or self.head_threshold)]
        order = {name: i for i, name in enumerate((*self.PROJECTIONS, self.HEAD_SITE))}
        return sorted(sites, key=lambda s: (s.layer, order[s.projection]))

    def set_head_threshold(self, on: bool) -> None:
        """Turn the threshold site before the output head on (θ from calibration or a thresholds file) or off."""
        site = [m for m in self.modules() if isinstance(m, ActivationThreshold) and m.projection == self.HEAD_SITE]
        if on and not site:
            from eventllm.errors import ConfigError

            raise ConfigError(f"a threshold before the output head is built for RWKV models so far, not {self.arch}; drop `head`")
        self.head_threshold = bool(on)
        if not on:
            for s in site:
                s.theta = 0.0

    def site_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of the projection each site feeds: projection_shapes(), and the head's when its site is on."""
        shapes = dict(self.projection_shapes())
        if self.head_threshold:
            w = self.projection_linears()[(None, self.HEAD_SITE)][0].weight
            shapes[self.HEAD_SITE] = (w.shape[1], w.shape[0])
        return shapes

    def site(self, layer: int, projection: str) -> ActivationThreshold:
        for s in self.threshold_sites():
            if s.layer == layer and s.projection == projection:
                return s
        raise KeyError(f"no threshold site layer {layer} projection {projection!r}")

    scores = "magnitude"  # how a site ranks its inputs: "magnitude" (θ for every input), "wina" or "gradient"
    SCORES = ("magnitude", "wina", "gradient")

    def set_scores(self, kind: str = "magnitude", scales: dict | None = None) -> None:
        """Per-neuron thresholds θ_i = θ / g_i at every site, input i passing where its score |x_i|·g_i > θ:
        "wina": g_i = ‖W[:, i]‖ (WINA's weight-aware score, W the projection the site feeds; several projections:
        the norm over all their rows), from the weights; "gradient": g from calibration data, the loss's
        sensitivity to each input (`eventllm.sparsity.scores.gradient_scales`), given as `scales` {(layer,
        projection): vector}; "magnitude": one θ for all inputs (the paper's). θ keeps its meaning per site: the
        bound on the score."""
        from eventllm.errors import ConfigError

        if kind not in self.SCORES:
            raise ConfigError(f"unknown scores {kind!r}; use one of {', '.join(self.SCORES)}")
        if (kind == "gradient") != (scales is not None):
            raise ConfigError("scores 'gradient' need their per-neuron scales (calibrate `scores` gradient measures them); "
                              "the other kinds take none")
        sites = [m for m in self.modules() if isinstance(m, ActivationThreshold)]
        active = {id(s) for s in self.threshold_sites()}
        if kind == "gradient":
            keys = {(s.layer, s.projection) for s in self.threshold_sites()}
            if set(scales) != keys:
                absent = sorted(keys - set(scales), key=str)[:3]
                extra = sorted(set(scales) - keys, key=str)[:3]
                names = lambda ks: ", ".join(f"layer {i} {p}" for i, p in ks)  # noqa: E731
                raise ConfigError(f"per-neuron scales for {len(scales)} sites, the model has {len(keys)}"
                                  + (f" (none for {names(absent)})" if absent else "")
                                  + (f" (no such site: {names(extra)})" if extra else "") + "; recalibrate with `scores` gradient")
        device = next(self.parameters()).device
        given = {}
        for s in sites:  # every vector checked before any site changes
            if kind == "gradient" and id(s) in active:
                g = torch.as_tensor(scales[(s.layer, s.projection)], dtype=torch.float32).flatten()
                n = self.site_linears(s)[0].in_features
                if g.numel() != n or not bool(torch.isfinite(g).all()) or bool((g <= 0).any()):
                    raise ConfigError(f"layer {s.layer} {s.projection}: per-neuron scales must be {n} finite numbers > 0 "
                                      f"(got {g.numel()}, smallest {float(g.min()) if g.numel() else 'none'}); "
                                      "recalibrate with `scores` gradient")
                given[id(s)] = g.to(device)
        for s in sites:
            if kind == "magnitude":
                s.channel_scale = None
            elif kind == "gradient":
                s.channel_scale = given.get(id(s))  # None: the head's site while it is off
            else:
                with torch.no_grad():
                    sq = sum(lin.weight.detach().float().square().sum(0) for lin in self.site_linears(s))
                    # an all-zero column: its input changes nothing; the smallest positive norm keeps θ_i finite
                    s.channel_scale = sq.sqrt().clamp_min(torch.finfo(torch.float32).tiny)
        self.scores = kind

    def site_linears(self, site: ActivationThreshold) -> list[nn.Linear]:
        """The projection(s) `site` feeds (`projection_linears` keys the head's by layer None)."""
        key = (None, site.projection) if site.projection == self.HEAD_SITE else (site.layer, site.projection)
        return self.projection_linears()[key]

    def channel_scales(self) -> dict:
        """g of every site that has per-neuron thresholds (float32 tensors), by (layer, projection)."""
        return {(s.layer, s.projection): s.channel_scale for s in self.threshold_sites() if s.channel_scale is not None}

    def theta_vectors(self) -> dict:
        """The per-neuron bounds θ / g (numpy float32, what |x| is compared with) of the sites that have them."""
        return {(s.layer, s.projection): s.theta_bound().cpu().numpy() for s in self.threshold_sites()
                if s.channel_scale is not None}

    def set_theta_vectors(self, vectors: dict, thetas: dict) -> None:
        """Give the sites named in `vectors` the per-neuron bounds of a process graph bit for bit: θ from `thetas`
        and g such that θ / g (in float32) is the vector (the trace engine's masks must be the graph's events)."""
        from eventllm.errors import GraphError

        for key, vec in vectors.items():
            s = self.site(*key)
            bound = torch.as_tensor(np.asarray(vec, dtype=np.float32)).flatten()
            n = self.site_linears(s)[0].in_features
            g = _scale_for_bound(float(thetas[key]), bound) if bound.numel() == n else None
            if g is None:
                why = (f"{bound.numel()} values for the model's {n} inputs" if bound.numel() != n
                       else f"no θ / g with its score bound {thetas[key]} gives them")
                raise GraphError(f"layer {key[0]} {key[1]}: the graph's per-neuron θ do not fit this model's site ({why}); "
                                 "rebuild the graph with `eventllm build`, or pass the model it was built from")
            s.theta, s.channel_scale = float(thetas[key]), g
        self.scores = "graph"  # bounds taken from a graph (not saved as a thresholds file)

    def get_thetas(self) -> dict[tuple[int, str], float]:
        return {(s.layer, s.projection): s.theta for s in self.threshold_sites()}

    def set_thetas(self, thetas: dict[tuple[int, str], float] | float) -> None:
        """Set every θ to one value, or the θ of each (layer, projection) named in a dict."""
        if isinstance(thetas, (int, float)):
            for s in self.threshold_sites():
                s.theta = float(thetas)
            return
        for (layer, proj), value in thetas.items():
            self.site(layer, proj).theta = float(value)

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection of one layer (all layers are alike)."""
        raise NotImplementedError

    @property
    def n_layer(self) -> int:
        return self.config.n_layer

    # --- running ----------------------------------------------------------------------------------------
    def init_state(self, batch: int = 1):
        raise NotImplementedError

    @torch.no_grad()
    def step(self, token: int | torch.Tensor, state):
        """One token of recurrent inference: returns (logits [vocab], new state)."""
        idx = torch.as_tensor(token, dtype=torch.long).reshape(1, 1)
        logits, state = self(idx, state)
        return logits[0, -1], state

    # --- identity ---------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return asdict(self.config)

    def projection_linears(self) -> dict[tuple[int | None, str], list[nn.Linear]]:
        """The nn.Linear modules of every projection site, by (layer, projection), and of the head by
        (None, "head") — the weights `eventllm.models.quantize` quantises (a fused site lists its parts)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash of the architecture, config and trained weights (before any fake quantisation):
        thresholds files are tied to it."""
        if getattr(self, "_fingerprint", None):
            return self._fingerprint
        h = hashlib.sha256()
        h.update(json.dumps({"arch": self.arch, "config": self.config_dict()}, sort_keys=True).encode())
        for name, p in sorted(self.state_dict().items()):
            h.update(name.encode())
            t = p.detach().to(torch.float32).cpu().contiguous().flatten()
            # a strided sample of every tensor keeps this fast on large models and still tells two apart
            step = max(1, t.numel() // 4096)
            h.update(t[::step].numpy().tobytes())
        return h.hexdigest()[:16]


def _scale_for_bound(theta: float, bound: torch.Tensor) -> torch.Tensor | None:
    """A float32 g with float32(θ) / g == bound exactly (g = θ / bound, moved by an ulp where rounding missed); None
    where none exists (bounds that no θ / g gives: a bound > 0 at θ = 0, a negative or NaN one)."""
    t = torch.tensor(theta, dtype=torch.float32)
    if bool(torch.isnan(bound).any()) or bool((bound < 0).any()) or not math.isfinite(theta) or theta < 0:
        return None
    if theta == 0.0:
        return None if bool((bound != 0).any()) else torch.ones_like(bound)
    g = (t / bound).clamp_min(torch.finfo(torch.float32).tiny)
    for _ in range(8):
        got = t / g
        if bool((got == bound).all()):
            return g
        # θ / g decreases in g: a bound too high needs a larger g, one too low a smaller g
        g = torch.where(got > bound, torch.nextafter(g, torch.tensor(float("inf"))),
                        torch.where(got < bound, torch.nextafter(g, torch.tensor(0.0)), g))
    return None
