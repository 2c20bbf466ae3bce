"""Sparsity allocated across threshold sites by measured loss (issue 13, item 3; in the spirit of TEAL and ActTail):
the loss bound is spent where it buys the most MAC-weighted sparsity.

The paper's search (`calibrate._search`) walks the sites in data-flow order, and each site takes what a fixed per-site
tolerance allows, whatever its size: a 384×384 attention input and a 384×1536 FFN key input cost the same share of
the bound, and the first sites searched see a model that is still dense. This search instead prices every site's
sparsity in loss and buys the cheapest MACs first, on the same calibration windows (`calibrate.calibration_batch`):

1. Levels. For each site s, zero fractions q_{s,j} = z_s + (1 − z_s)·j/J, j = 1 … J − 1, from its natural zero fraction
   z_s up (J = `levels`: 20 removes 5%, 10%, … 95% of the inputs that are not zero already); θ_{s,j} is the score
   (|x|, or |x_i|·‖W[:, i]‖ with per-neuron θ) below which that fraction of the site's inputs lies on the calibration
   tokens of the dense model. The search sets θ directly: no Top-K stage, no Top-K → θ conversion.
2. Profiles. c_{s,j} = what site s alone at θ_{s,j} costs on the calibration batch (every other site dense; the
   cost is below), run from the cached residual stream entering s's layer (`residual_before` / `logits_from`,
   exactly the full forward's logits). A site stops at the first level that costs more than `stop` × the budget:
   no allocation within the budget takes it further.
3. Allocation. A level skips g_{s,j} = MACs(s)·(q_{s,j} − z_s) multiply-accumulates (MACs: in × out of the projection
   the site feeds, `CausalLM.site_shapes`). With costs made monotone (running maximum, ≥ 0), each site's upper
   concave hull in (cost, gain) gives steps of decreasing gain per unit of loss; the steps of all sites merged in
   order of decreasing gain/cost are the greedy "accept the step that buys the most MACs per unit of loss". With
   additive costs, every prefix of that order is the best allocation for its summed cost (up to the hull's rounding).
4. Joint check. Costs do not add exactly (the errors of several sites compound through the later layers): the
   longest prefix whose *joint* cost, and loss increase, on the calibration batch stay within the budget is found
   by bisection over the prefix length (about log2(steps) full runs). Each site's θ is the θ_{s,j} of its level.

The cost is the KL divergence of the next-token distribution from the dense model's by default (`cost="kl"`),
the cross-entropy increase with "loss": on a few thousand tokens the cross-entropy of a slightly perturbed model
moves either way by chance (measured on zoo:rwkv4-tiny, 256 tokens: 81 of 168 single-site levels "lowered" the
loss, and a greedy on it reached 61.5% MAC-weighted at −0.022 nats, sparsity that helps only those tokens);
the KL is never negative and prices the distortion itself. With E[log p_dense − log p_sparse] under the dense
model's own distribution, the same log(1 + bound) is its budget.

`calibrate(search="greedy")` runs this in place of the paper's steps 2–3 and then applies the same common final θ
scale on the check stream. Cost: Σ_s (levels profiled) partial runs + ~log2(steps) full runs (the paper's search:
~4 full-depth-from-the-site runs per site); cheap on a GPU, minutes on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from eventllm.errors import ConfigError, DataError
from eventllm.models.base import CausalLM
from eventllm.models.threshold import ActivationThreshold

Site = tuple[int, str]


@dataclass
class Profile:
    """One site's measured price list: at zero fraction `levels[j]` (θ = `thetas[j]`) it alone costs `costs[j]` nats."""

    site: Site
    macs: int  # multiply-accumulates per token of the projection(s) the site feeds
    natural: float  # zero fraction at θ = 0 on the calibration tokens
    levels: list[float] = field(default_factory=list)
    thetas: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)  # measured; may be shorter than levels (the walk stopped)

    def gains(self) -> list[float]:
        """MACs per token newly skipped at each profiled level."""
        return [self.macs * (q - self.natural) for q in self.levels[: len(self.costs)]]


@dataclass
class Step:
    """Raise `site` (index into the profiles) to `level` (index into its levels): +gain MACs for +cost nats."""

    site: int
    level: int
    gain: float
    cost: float

    @property
    def ratio(self) -> float:
        return math.inf if self.cost <= 0 else self.gain / self.cost


@dataclass
class Allocation:
    thetas: dict[Site, float]
    levels: dict[Site, float]  # zero fraction each θ gives on the calibration tokens of the dense model
    loss_dense: float  # cross-entropy of the calibration batch, dense
    loss: float  # the same with all θ set
    cost: float  # what they cost (the measure the budget is in: KL divergence or loss increase, nats)
    budget: float
    steps_taken: int
    steps: int
    evaluations: int
    profiles: list[Profile]
    history: list[dict] = field(default_factory=list)

    def mac_weighted(self) -> float:
        """The MAC-weighted zero fraction these levels give on the calibration tokens (dense-model inputs)."""
        macs = {p.site: p.macs for p in self.profiles}
        return sum(macs[k] * q for k, q in self.levels.items()) / sum(macs.values())


def site_macs(model: CausalLM) -> dict[Site, int]:
    """In × out of the projection each threshold site feeds (the weights of the MAC-weighted sparsity)."""
    shapes = model.site_shapes()
    return {(s.layer, s.projection): shapes[s.projection][0] * shapes[s.projection][1] for s in model.threshold_sites()}


@torch.no_grad()
def site_levels(model: CausalLM, inputs: torch.Tensor, levels: int) -> list[Profile]:
    """Step 1: every site's natural zero fraction and its grid of (zero fraction, θ) on `inputs`, θ = 0 everywhere."""
    sites = model.threshold_sites()
    macs = site_macs(model)
    found: dict[Site, Profile] = {}

    def observe(site: ActivationThreshold, x: torch.Tensor, y: torch.Tensor) -> None:
        scores = site.scores(x.detach()).flatten().float().sort().values
        n = scores.numel()
        natural = int((scores == 0).sum()) / n
        p = Profile((site.layer, site.projection), macs[(site.layer, site.projection)], natural)
        for j in range(1, levels):
            q = natural + (1.0 - natural) * j / levels
            theta = float(scores[min(n - 1, max(0, math.ceil(q * n) - 1))])
            if theta <= 0 or (p.thetas and theta <= p.thetas[-1]):
                continue  # ties: this θ zeroes no more than the last
            p.thetas.append(theta)
            p.levels.append(int(torch.searchsorted(scores, torch.tensor(theta, device=scores.device), right=True)) / n)
        found[p.site] = p

    model.set_thetas(0.0)
    for s in sites:
        s.observer = observe
    try:
        model(inputs)
    finally:
        for s in sites:
            s.observer = None
    return [found[(s.layer, s.projection)] for s in sites]


COSTS = ("kl", "loss")


class _Loss:
    """What a setting of θ costs on the calibration batch, counted: "loss", the cross-entropy increase over the dense
    model; "kl", the mean KL divergence of the next-token distribution from the dense model's (never negative: on a
    few thousand tokens the cross-entropy of a slightly perturbed model moves either way by chance, and a search on
    it buys sparsity that only helps these tokens). From a cached residual stream entering a layer when the model
    offers `residual_before` / `logits_from` (the same logits as a full run)."""

    def __init__(self, model: CausalLM, batch: torch.Tensor, reuse_prefix: bool, cost: str):
        if cost not in COSTS:
            raise ConfigError(f"unknown cost {cost!r}; use one of {', '.join(COSTS)}")
        self.model, self.cost = model, cost
        self.inputs, self.targets = batch[:, :-1], batch[:, 1:].reshape(-1)
        self.can_cache = reuse_prefix and hasattr(model, "residual_before") and hasattr(model, "logits_from")
        self.evaluations = 0
        self.dense_logp: torch.Tensor | None = None  # the dense model's next-token log-distribution, [tokens, vocab]
        self.dense_p: torch.Tensor | None = None
        self.dense_loss = 0.0

    @torch.no_grad()
    def dense(self) -> None:
        """Measure the dense model (θ = 0 everywhere): the reference of every cost."""
        logp = self._logp(None)
        self.dense_loss = self._ce(logp)
        if self.cost == "kl":
            self.dense_logp, self.dense_p = logp, logp.exp()

    def _logp(self, start) -> torch.Tensor:
        self.evaluations += 1
        logits = self.model.logits_from(*start) if start is not None else self.model(self.inputs)[0]
        logp = F.log_softmax(logits.float().reshape(-1, logits.shape[-1]), dim=-1)
        if not torch.isfinite(logp).all():
            raise DataError("the calibration loss is NaN or infinite; the model or the calibration data is broken")
        return logp

    def _ce(self, logp: torch.Tensor) -> float:
        return -logp.gather(1, self.targets[:, None]).mean().item()

    @torch.no_grad()
    def __call__(self, start: tuple[int, torch.Tensor] | None = None) -> tuple[float, float]:
        """(cost, cross-entropy) with the model's current θ."""
        logp = self._logp(start)
        ce = self._ce(logp)
        if self.cost == "loss":
            return ce - self.dense_loss, ce
        # the difference first: a KL of 1e-5 nats is not lost to rounding, as in Σ p log p − Σ p log q
        return (self.dense_p * (self.dense_logp - logp)).sum(-1).mean().item(), ce

    @torch.no_grad()
    def start(self, layer: int) -> tuple[int, torch.Tensor] | None:
        """The cached start of runs that change nothing before `layer` (None: run from the embedding)."""
        return (layer, self.model.residual_before(self.inputs, layer)) if self.can_cache else None


def measure_profiles(model: CausalLM, loss: _Loss, profiles: list[Profile], budget: float, stop: float,
                     history: list, progress: bool = False) -> None:
    """Step 2: each site alone at each of its levels, every other site dense; fills `profile.costs` (`loss.dense()`
    measured first)."""
    from tqdm import tqdm

    sites = {(s.layer, s.projection): s for s in model.threshold_sites()}
    model.set_thetas(0.0)
    start, cached_layer = None, None
    bar = tqdm(profiles, desc="pricing sites", disable=not progress, unit="site")
    for p in bar:
        site = sites[p.site]
        if site.layer != cached_layer:  # the residual entering this layer: every earlier site is dense
            start = None  # (free the last layer's first)
            start, cached_layer = loss.start(site.layer), site.layer
        try:
            for q, theta in zip(p.levels, p.thetas):
                site.theta = theta
                cost, ce = loss(start)
                p.costs.append(cost)
                history.append({"layer": p.site[0], "projection": p.site[1], "zero_fraction": q, "theta": theta,
                                loss.cost: cost, "loss": ce, "ref": loss.dense_loss, "phase": "profile"})
                if cost > stop * budget:
                    break
        finally:
            site.theta = 0.0
        bar.set_postfix(layer=p.site[0], proj=p.site[1], levels=len(p.costs))


def hull_steps(profiles: list[Profile]) -> list[Step]:
    """Step 3: every site's steps along the upper concave hull of (monotone cost, gain), all merged by decreasing
    gain per unit of loss (ties: data-flow order, and a site's own steps in their order)."""
    steps: list[Step] = []
    for i, p in enumerate(profiles):
        gains = p.gains()
        costs, worst = [], 0.0
        for c in p.costs:
            worst = max(worst, c)
            costs.append(worst)
        at, g0, c0 = -1, 0.0, 0.0
        while at < len(costs) - 1:
            best, best_ratio = None, -math.inf
            for k in range(at + 1, len(costs)):
                dg, dc = gains[k] - g0, costs[k] - c0
                ratio = math.inf if dc <= 0 else dg / dc
                if dg > 0 and ratio > best_ratio:  # on a tie the nearer point: collinear points stay steps of their own
                    best, best_ratio = k, ratio
            if best is None:
                break
            steps.append(Step(i, best, gains[best] - g0, costs[best] - c0))
            at, g0, c0 = best, gains[best], costs[best]
    order = sorted(range(len(steps)), key=lambda n: (-steps[n].ratio, steps[n].site, n))
    return [steps[n] for n in order]


def levels_after(steps: list[Step], n: int) -> dict[int, int]:
    """Each site's level after the first `n` steps (sites not raised are absent)."""
    out: dict[int, int] = {}
    for s in steps[:n]:
        out[s.site] = s.level
    return out


@torch.no_grad()
def allocate(model: CausalLM, batch: torch.Tensor, budget: float, *, levels: int = 20, stop: float = 1.5, cost: str = "kl",
             reuse_prefix: bool = True, progress: bool = False) -> Allocation:
    """θ for every site that spends at most `budget` nats of `cost` (COSTS; see `_Loss`) on `batch` (token windows,
    [B, T + 1]) where it skips the most MACs; the model is left with them set. Steps 1–4 of the module docstring.

    >>> a = allocate(model, calibration_batch(ids, 2048, 256, 0), math.log1p(0.01))   # doctest: +SKIP
    >>> a.thetas[(0, "ffn.key")], a.levels[(0, "ffn.key")]                          # doctest: +SKIP
    """
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise ConfigError(f"levels must be an integer ≥ 2 (the grid of zero fractions per site), got {levels!r}")
    if not (budget > 0 and math.isfinite(budget)):
        raise ConfigError(f"the loss budget must be a finite number of nats > 0, got {budget!r}")
    if not stop >= 1:
        raise ConfigError(f"stop must be ≥ 1 (× the budget a site alone may cost before its walk stops), got {stop!r}")
    model.eval()
    loss = _Loss(model, batch, reuse_prefix, cost)
    history: list[dict] = []
    profiles = site_levels(model, loss.inputs, levels)
    loss.dense()
    measure_profiles(model, loss, profiles, budget, stop, history, progress)
    steps = hull_steps(profiles)
    sites = {(s.layer, s.projection): s for s in model.threshold_sites()}

    def set_prefix(n: int) -> dict[int, int]:
        at = levels_after(steps, n)
        model.set_thetas(0.0)
        for i, j in at.items():
            sites[profiles[i].site].theta = profiles[i].thetas[j]
        return at

    joint: dict[int, tuple[float, float]] = {0: (0.0, loss.dense_loss)}

    def within(n: int) -> bool:
        if n not in joint:
            set_prefix(n)
            joint[n] = loss()
            history.append({"steps": n, cost: joint[n][0], "loss": joint[n][1], "ref": loss.dense_loss, "phase": "joint"})
        c, ce = joint[n]
        return c <= budget and ce - loss.dense_loss <= budget  # the bound itself holds on the batch too

    lo, hi = 0, len(steps)
    if within(hi):
        lo = hi
    while hi - lo > 1:  # the longest prefix within the budget (the joint cost grows with the prefix, near enough)
        mid = (lo + hi) // 2
        if within(mid):
            lo = mid
        else:
            hi = mid
    at = set_prefix(lo)
    thetas = {p.site: (p.thetas[at[i]] if i in at else 0.0) for i, p in enumerate(profiles)}
    chosen = {p.site: (p.levels[at[i]] if i in at else p.natural) for i, p in enumerate(profiles)}
    return Allocation(thetas=thetas, levels=chosen, loss_dense=loss.dense_loss, loss=joint[lo][1], cost=joint[lo][0],
                      budget=budget, steps_taken=lo, steps=len(steps), evaluations=loss.evaluations, profiles=profiles,
                      history=history)
