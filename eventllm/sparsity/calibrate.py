"""Training-free threshold calibration (Knunyants et al. 2025, "Explore Activation Sparsity in Recurrent LLMs
for Energy-Efficient Neuromorphic Computing", Sec. III: training-free threshold initialisation; the authors'
code: ERNIS-LAB/LLM-activation-sparsity, iterative_init.py and threshold_utils.py).

The published algorithm, step by step, on a small batch of local calibration text:

1. Measure the dense model's loss L on the calibration batch.
2. Top-K search, greedy, site after site in data-flow order (layer 0 first; within a layer the projections
   in `model.PROJECTIONS` order): replace the site's threshold by a Top-K that keeps the fraction k of each
   token's largest-magnitude inputs, trying k from a descending grid (linear: 1.0, 0.9, …, 0.1; or
   geometric from `start_k` to 0.01 in `k_num` values). Accept the smallest k whose loss satisfies
   L_k / L < loss_inc, then make L_k the reference for the next site (so tolerances compound, as published).
   A warm start: when earlier layers already chose a k for the same projection, start from their most
   common choice and walk down (if it passes) or up (if it fails) from there.
3. Top-K → threshold: run the batch through the Top-K model; for every site, the smallest non-zero
   magnitude each token kept, averaged over tokens, becomes θ (the HardShrink threshold T_θ).

What eventllm adds on top (each reported separately in the result):
- `max_ppl_increase` (relative perplexity increase bound, e.g. 0.01 = 1%): the per-site tolerance is set so
  that the compounded loss stays within the bound; after step 3, one common factor scales every θ, chosen
  (secant steps in log-log coordinates, `largest_scale_within`) as the largest that keeps the increase within
  the bound on a longer check stream of the same split, run with the state carried as evaluation runs it (the
  small search batch of short windows alone understates the increase on long text).
- `target_sparsity`: after steps 1–3, one common scale of all θ is bisected so that the mean projection-input
  sparsity on the check stream reaches the target; the allocation across layers and projections (where
  sparsity hurts least) comes from the search.
- Sites whose search kept everything (k = 1.0) get θ = 0 instead of the mean smallest magnitude.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from eventllm.errors import ConfigError, DataError
from eventllm.evaluate.perplexity import perplexity
from eventllm.models.base import CausalLM
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.sparsity.allocate import allocate
from eventllm.sparsity.scores import gradient_scales


@dataclass
class CalibrationResult:
    thetas: dict[tuple[int, str], float]
    keeps: dict[tuple[int, str], float]
    loss_dense: float
    loss_final: float
    sparsity: float  # mean projection-input sparsity on the check stream, final thresholds
    natural_sparsity: float  # the same, θ = 0
    scale: float  # common factor applied to the searched thresholds (1.0: none)
    loss_inc: float
    evaluations: int
    seconds: float
    tokens: int  # tokens of the search batch
    check_tokens: int  # tokens of the stream the final scale was set and measured on
    history: list[dict] = field(default_factory=list)
    mac_weighted: float = 0.0  # MAC-weighted sparsity on the check stream (the paper's measure), final thresholds
    scores: str = "magnitude"  # how the sites ranked their inputs (see CausalLM.set_scores)
    natural_mac_weighted: float = 0.0  # the same, θ = 0
    search: str = "paper"  # which search set the θ before the final scale: SEARCHES
    grad_tokens: int = 0  # scores "gradient": tokens the per-neuron scales were measured on (windows seeded seed + 2)

    @property
    def ppl_increase(self) -> float:
        return math.exp(self.loss_final - self.loss_dense) - 1.0

    def meta(self) -> dict:
        return {
            "method": METHODS[self.search], "search": self.search,
            "scores": self.scores, **({"grad_tokens": self.grad_tokens} if self.scores == "gradient" else {}),
            "loss_inc": self.loss_inc, "scale": self.scale, "calibration_tokens": self.tokens, "check_tokens": self.check_tokens,
            "loss_dense": self.loss_dense, "loss_thresholded": self.loss_final,
            "ppl_increase_on_calibration": self.ppl_increase, "sparsity_on_calibration": self.sparsity,
            "natural_sparsity_on_calibration": self.natural_sparsity, "evaluations": self.evaluations,
            "mac_weighted_sparsity_on_calibration": self.mac_weighted,
            "natural_mac_weighted_sparsity_on_calibration": self.natural_mac_weighted,
            "seconds": self.seconds, "keep_fractions": [{"layer": l, "projection": p, "keep": k} for (l, p), k in self.keeps.items()],
        }


# --search: "paper" (steps 2-3 above, the default) or "greedy" (eventllm.sparsity.allocate: sparsity allocated by measured loss)
SEARCHES = ("paper", "greedy")
SCALE_SEARCHES = ("secant", "bisect")  # how the final common θ scale is found (calibrate's `scale_search`)
METHODS = {"paper": "training-free (Knunyants et al. 2025, Top-K search then Top-K to threshold)",
           "greedy": "training-free (greedy allocation by measured loss per MAC, eventllm.sparsity.allocate)"}


def keep_grid(start_k: float = 1.0, step: str = "linear", k_num: int = 8) -> list[float]:
    """The descending grid of kept fractions the search walks (as published)."""
    if step == "linear":
        return [round(k, 4) for k in np.arange(start_k, 0.0, -0.1) if k > 1e-9]
    if step == "exp":
        return sorted({round(float(k), 2) for k in np.geomspace(start_k, 0.01, k_num)}, reverse=True)
    raise ConfigError(f"unknown step {step!r}; use 'linear' or 'exp'")


def calibration_batch(ids: list[int], tokens: int, context: int, seed: int) -> torch.Tensor:
    """`tokens // context` windows of `context + 1` tokens at seeded random offsets of the stream."""
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    if ids_t.numel() < context + 2:
        raise DataError(f"calibration needs more than {context + 1} tokens of text, got {ids_t.numel()}; pass more text or a smaller `context`")
    n = max(1, tokens // context)
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.integers(0, ids_t.numel() - context - 1, size=n))
    return torch.stack([ids_t[s : s + context + 1] for s in starts])


def check_stream_start(length: int, tokens: int, seed: int) -> tuple[int, int]:
    """Where the check stream of `check_stream` lies in a stream of `length` tokens: (first token, tokens)."""
    n = min(tokens, length)
    return int(np.random.default_rng(seed + 1).integers(0, length - n + 1)), n


def check_stream(ids, tokens: int, seed: int) -> torch.Tensor:
    """`tokens` contiguous tokens of the stream at a seeded offset (all of it when shorter): the text a final θ is set
    and checked on, run as `eventllm evaluate` runs text."""
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    start, n = check_stream_start(ids_t.numel(), tokens, seed)
    return ids_t[start : start + n]


@torch.no_grad()
def batch_loss(model: CausalLM, batch: torch.Tensor) -> float:
    logits, _ = model(batch[:, :-1])
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).item()
    if not math.isfinite(loss):
        raise DataError("the calibration loss is NaN or infinite; the model or the calibration data is broken")
    return loss


def _search(model: CausalLM, batch: torch.Tensor, loss_inc: float, grid: list[float], progress: bool, history: list,
            reuse_prefix: bool = True) -> tuple[dict, int, float]:
    """Step 2: the greedy Top-K search. Returns keep fractions, loss evaluations, final reference loss."""
    from tqdm import tqdm

    base = batch_loss(model, batch)
    evaluations = 1
    chosen_by_projection: dict[str, list[float]] = defaultdict(list)
    keeps = {}
    sites = model.threshold_sites()
    # The residual stream entering the layer being searched does not change while its sites are searched
    # (earlier layers are fixed): compute it once per layer and run only the layers from there on. The
    # losses are exactly those of full forward passes (the same operations on the same values).
    cache: dict[int, torch.Tensor] = {}
    can_cache = reuse_prefix and hasattr(model, "residual_before") and hasattr(model, "logits_from")

    def loss_for(layer: int) -> float:
        if not can_cache:
            return batch_loss(model, batch)
        if layer not in cache:
            cache.clear()
            with torch.no_grad():
                cache[layer] = model.residual_before(batch[:, :-1], layer)
        with torch.no_grad():
            logits = model.logits_from(layer, cache[layer])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).item()
        if not math.isfinite(loss):
            raise DataError("the calibration loss is NaN or infinite; the model or the calibration data is broken")
        return loss

    bar = tqdm(sites, desc="calibrating", disable=not progress, unit="site")
    for site in bar:
        def trial(k: float) -> float:
            nonlocal evaluations
            site.keep = k
            evaluations += 1
            loss = loss_for(site.layer)
            history.append({"layer": site.layer, "projection": site.projection, "keep": k, "loss": loss, "ref": base})
            return loss

        def walk_down(ks: list[float]):
            """Accept each k while the loss stays within the tolerance; stop at the first that fails."""
            found = None
            for k in ks:
                loss = trial(k)
                if loss / base >= loss_inc:
                    break
                found = (k, loss)
            return found

        earlier = chosen_by_projection[site.projection]
        start = Counter(earlier).most_common(1)[0][0] if earlier else grid[0]
        i0 = grid.index(start) if start in grid else 0
        found = walk_down(grid[i0:])
        if found is None and i0 > 0:  # the warm start failed: walk up to the first k that passes
            for k in reversed(grid[:i0]):
                loss = trial(k)
                if loss / base < loss_inc:
                    found = (k, loss)
                    break
        best_k, best_loss = found or (1.0, base)
        site.keep = best_k
        keeps[(site.layer, site.projection)] = best_k
        chosen_by_projection[site.projection].append(best_k)
        base = best_loss
        bar.set_postfix(layer=site.layer, proj=site.projection, keep=best_k, loss=f"{base:.4f}")
    return keeps, evaluations, base


@torch.no_grad()
def _top_k_to_thresholds(model: CausalLM, batch: torch.Tensor, keeps: dict) -> dict[tuple[int, str], float]:
    """Step 3: θ = mean over tokens of the smallest non-zero magnitude the Top-K kept (with per-neuron
    thresholds: the smallest score |x_i|·‖W[:, i]‖, the site's bound on the score)."""
    sums: dict = defaultdict(float)
    counts: dict = defaultdict(int)

    def observe(site, x, y):
        a = site.scores(y.detach()).flatten(0, -2)
        smallest = a.masked_fill(a == 0, float("inf")).amin(dim=1)
        smallest = smallest[torch.isfinite(smallest)]
        sums[(site.layer, site.projection)] += smallest.sum().item()
        counts[(site.layer, site.projection)] += smallest.numel()

    sites = model.threshold_sites()
    for s in sites:
        s.observer = observe
    try:
        model(batch[:, :-1])
    finally:
        for s in sites:
            s.observer = None
    return {key: (sums[key] / counts[key] if keeps[key] < 1.0 and counts[key] else 0.0) for key in keeps}


def _set_scaled(model: CausalLM, thetas: dict, scale: float) -> None:
    model.set_thetas({k: v * scale for k, v in thetas.items()})


def _bisect(ok, lo: float, hi: float, steps: int = 12) -> tuple[float, float]:
    """Narrow [lo, hi] where ok(lo) holds and ok(hi) does not (ok monotone): returns the final (lo, hi)."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def largest_scale_within(increase, bound: float, *, tol: float = 0.05, max_runs: int = 6, slope: float = 3.5,
                         cap: float = 64.0) -> float:
    """The largest common θ scale s whose perplexity increase `increase(s)` stays within `bound`, in a few runs.

    The increase grows about as a power of the scale (c·s^p, p ≈ 3–4 on the zoo models: the sparsity curve of
    docs/HISTORY.md §1), so each guess is a secant step in log-log coordinates through the two runs nearest the
    bound (the first step assumes p = `slope`), aimed a little inside the bound and kept inside the bracket of
    the largest passing and the smallest failing scale (halving the bracket where the step would leave it).
    It stops at a passing scale within `tol` of the bound, or after `max_runs` runs, and returns the largest
    passing scale seen (0: the dense model, when none passed). s = 0 is never run: it passes by definition.

    >>> round(largest_scale_within(lambda s: 0.002 * s ** 3, 0.01), 3)  # exact answer 5 ** (1/3) = 1.710
    1.696
    """
    seen: dict[float, float] = {}
    lo, hi = 0.0, math.inf  # the largest passing and the smallest failing scale so far
    s = 1.0
    for _ in range(max_runs):
        inc = seen[s] = increase(s)
        if inc <= bound:
            lo = max(lo, s)
            if inc >= (1.0 - tol) * bound or s >= cap:
                break
        else:
            hi = min(hi, s)
        positive = sorted((x for x in seen.items() if x[1] > 0), key=lambda x: abs(math.log(x[1] / bound)))
        if positive:
            (s1, i1), p = positive[0], slope
            if len(positive) > 1 and positive[1][0] != s1:
                s2, i2 = positive[1]
                p = min(max(math.log(i1 / i2) / math.log(s1 / s2), 1.0), 8.0) if i1 != i2 else slope
            guess = s1 * math.exp((math.log((1.0 - tol / 2) * bound) - math.log(i1)) / p)
        else:  # no measurable increase yet: widen
            guess = 1.5 * max(seen)
        guess = min(guess, cap)
        if not lo < guess < hi or guess in seen:
            guess = 0.5 * (lo + hi) if math.isfinite(hi) else 1.5 * lo
        s = guess
    return lo


def _check_request(max_ppl_increase, target_sparsity, loss_inc, scale_search: str, safety: float, search: str) -> None:
    """`calibrate`'s goals and options, refused before any work."""
    given = [x is not None for x in (max_ppl_increase, target_sparsity, loss_inc)]
    if sum(given) > 1:
        raise ConfigError("give only one of `max_ppl_increase`, `target_sparsity` and `loss_inc`")
    if max_ppl_increase is not None and not (0 < max_ppl_increase < 10):
        raise ConfigError(f"`max_ppl_increase` must be a fraction such as 0.01 (1%), got {max_ppl_increase}")
    if target_sparsity is not None and not (0 < target_sparsity < 1):
        raise ConfigError(f"`target_sparsity` must be between 0 and 1, got {target_sparsity}")
    if scale_search not in SCALE_SEARCHES:
        raise ConfigError(f"unknown scale search {scale_search!r}; use one of {', '.join(SCALE_SEARCHES)}")
    if not 0 < safety <= 1:
        raise ConfigError(f"safety must be in (0, 1], got {safety}")
    if loss_inc is not None and loss_inc <= 1.0:
        raise ConfigError(f"`loss_inc` must be above 1 (e.g. 1.001), got {loss_inc}")
    if search not in SEARCHES:
        raise ConfigError(f"unknown search {search!r}; use one of {', '.join(SEARCHES)}")


def calibrate(model: CausalLM, ids: list[int], *, max_ppl_increase: float | None = None, target_sparsity: float | None = None,
              loss_inc: float | None = None, tokens: int = 2048, context: int = 256, step: str = "linear", start_k: float = 1.0,
              k_num: int = 8, seed: int = 0, check_tokens: int = 32768, safety: float = 0.9,
              progress: bool = True, reuse_prefix: bool = True, scores: str = "magnitude", search: str = "paper",
              levels: int = 20, scale_search: str = "secant", grad_tokens: int = 8192) -> CalibrationResult:
    """Find one θ per projection per layer from calibration tokens `ids`; the model is left with them set.

    `scores` = "wina" searches per-neuron thresholds θ_i = θ / ‖W[:, i]‖: the Top-K ranks each site's inputs by
    |x_i|·‖W[:, i]‖ and θ bounds that score (`CausalLM.set_scores`); "gradient" the same with g_i measured on
    `grad_tokens` tokens of `ids` (windows of `context`): the loss's sensitivity to each input
    (`eventllm.sparsity.scores.gradient_scales`); "magnitude" is the paper's.

    `reuse_prefix` runs each search trial from the cached residual stream entering the searched layer
    (models that offer `residual_before`/`logits_from`, i.e. RWKV); the result is the same either way.
    `scale_search` = "secant" finds the final common scale in about 3 check-stream runs
    (`largest_scale_within`); "bisect" is the earlier widening and 8-step bisection (about 12 runs).

    `search` = "greedy" replaces steps 2–3 by `eventllm.sparsity.allocate.allocate` (θ per site where the loss buys the
    most MAC-weighted sparsity, `levels` zero fractions per site), spending the loss the per-site tolerances compound
    to, L·(loss_inc^n − 1) (= log(1 + max_ppl_increase) with that goal); the final scale below is the same.

    Exactly one of `max_ppl_increase`, `target_sparsity` or `loss_inc` (the paper's per-site loss ratio) may be
    given; with none, loss_inc = 1.001 as in the authors' code. With `max_ppl_increase`, the final scale keeps
    the check stream within `safety` × the bound: the largest scale that passes on a finite sample is an
    optimistic pick, and on held-out text the increase came out higher (measured: calibrated on the valid split
    to +0.98% on 32k tokens → +1.0004% on the 68k-token test split).
    """
    _check_request(max_ppl_increase, target_sparsity, loss_inc, scale_search, safety, search)
    t0 = time.perf_counter()
    model.eval()
    context = min(context, getattr(model.config, "max_positions", context))
    device = next(model.parameters()).device
    if scores == "gradient":
        if grad_tokens < context:
            raise ConfigError(f"`grad_tokens` {grad_tokens} is less than one window of `context` {context}; pass more")
        grad_batch = calibration_batch(ids, grad_tokens, context, seed + 2)
        scales = gradient_scales(model, grad_batch.to(device), progress=progress)
        model.set_scores("gradient", scales)
    else:
        model.set_scores(scores)
    batch = calibration_batch(ids, tokens, context, seed).to(device)
    model.set_thetas(0.0)
    loss_dense = batch_loss(model, batch)
    n_sites = len(model.threshold_sites())
    if loss_inc is None:
        if max_ppl_increase is not None:
            # compounding n per-site ratios must stay within the loss bound L + log(1 + Δ)
            loss_inc = (1.0 + math.log1p(max_ppl_increase) / loss_dense) ** (1.0 / n_sites)
        else:
            loss_inc = 1.001
    history: list[dict] = []
    try:
        if search == "greedy":
            keeps, evaluations, thetas = _greedy(model, batch, loss_dense * (loss_inc ** n_sites - 1.0), levels, reuse_prefix,
                                                 progress, history)
        else:
            keeps, evaluations, _ = _search(model, batch, loss_inc, keep_grid(start_k, step, k_num), progress, history, reuse_prefix)
            thetas = _top_k_to_thresholds(model, batch, keeps)
    finally:
        for s in model.threshold_sites():
            s.keep = None
    # The final scale is set and checked on a longer stretch of the same split, run as `eventllm evaluate` runs
    # text (one contiguous stream, the state carried): the small search batch of short windows alone
    # understates how the errors of thresholding accumulate over a long context.
    check = check_stream(ids, check_tokens, seed)

    runs: dict[float, tuple[SparsityReport, float]] = {}  # scale → (sparsity report, nll) on the check stream

    def check_run(scale: float) -> tuple[SparsityReport, float]:
        """The check stream at θ × scale (each scale run once: the final thresholds reuse their run)."""
        nonlocal evaluations
        if scale not in runs:
            evaluations += 1
            _set_scaled(model, thetas, scale)
            with SparsityMeter(model) as meter:
                nll = perplexity(model, check).nll
            runs[scale] = (SparsityReport.from_meter(model, meter), nll)
        return runs[scale]

    natural_report, loss_dense = check_run(0.0)
    scale = 1.0
    if max_ppl_increase is not None:
        def increase(s: float) -> float:
            return math.exp(check_run(s)[1] - loss_dense) - 1.0

        if scale_search == "secant":
            scale = largest_scale_within(increase, safety * max_ppl_increase)
        else:  # the earlier way: widen by 1.5x while within the bound, then 8 bisection steps
            def within_bound(s: float) -> bool:
                return increase(s) <= safety * max_ppl_increase

            lo, hi = (1.0, 1.5) if within_bound(1.0) else (0.0, 1.0)
            while lo >= 1.0 and within_bound(hi) and hi < 64:
                lo, hi = hi, hi * 1.5
            scale, _ = _bisect(within_bound, lo, hi, steps=8)
    elif target_sparsity is not None and any(thetas.values()):
        def short_of_target(s: float) -> bool:
            return check_run(s)[0].average() < target_sparsity

        hi = 1.0
        while short_of_target(hi):  # grow until the target is reached
            if hi > 1e4:
                raise ConfigError(f"target sparsity {target_sparsity:.0%} is out of reach for this model")
            hi *= 2.0
        _, scale = _bisect(short_of_target, 0.0, hi)  # the smallest scale that reaches the target
    report, loss = check_run(scale)
    _set_scaled(model, thetas, scale)
    sparsity, natural = report.average(), natural_report.average()
    return CalibrationResult(
        thetas={k: v * scale for k, v in thetas.items()}, keeps=keeps, loss_dense=loss_dense, loss_final=loss,
        sparsity=sparsity, natural_sparsity=natural, scale=scale, loss_inc=loss_inc, evaluations=evaluations,
        seconds=time.perf_counter() - t0, tokens=int(batch[:, 1:].numel()), check_tokens=int(check.numel() - 1), history=history,
        mac_weighted=report.mac_skipped(), natural_mac_weighted=natural_report.mac_skipped(), scores=scores, search=search,
        grad_tokens=int(grad_batch[:, 1:].numel()) if scores == "gradient" else 0,
    )


def _greedy(model: CausalLM, batch: torch.Tensor, budget: float, levels: int, reuse_prefix: bool, progress: bool,
            history: list) -> tuple[dict, int, dict]:
    """--search greedy in place of steps 2–3: keep fractions (1 − zero fraction on the calibration tokens), loss
    evaluations and θ from `allocate`."""
    a = allocate(model, batch, budget, levels=levels, reuse_prefix=reuse_prefix, progress=progress)
    history.extend(a.history)
    return {k: 1.0 - q for k, q in a.levels.items()}, a.evaluations, a.thetas
