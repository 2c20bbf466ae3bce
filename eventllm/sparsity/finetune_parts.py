"""The pieces of sparsity-aware fine-tuning (`eventllm.sparsity.finetune`): watching the sites, the distillation loss,
the check run, the weight average, the states a run keeps and how its end state is chosen, and its checkpoint file."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eventllm.atomic import atomic_path
from eventllm.errors import ConfigError, DataError
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.models.base import CausalLM
from eventllm.models.threshold import ActivationThreshold, SiteObserver
from eventllm.sparsity.calibrate import _bisect

# a check "reached the target" at this far below it (sampling noise of the per-site quantiles)
REACHED_TOLERANCE = 0.001
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "eventllm-finetune-checkpoint", 1


class SiteTracker(SiteObserver):
    """Watches every site of `model` during forwards: the share of inputs that pass (counted on the device: no host
    sync per site) and, for the sites given a target sparsity in `quantiles`, the quantile of |x| at it, estimated from
    `sample` inputs drawn at random. `read()` returns both and starts over."""

    def __init__(self, model: CausalLM, sample: int = 16384, generator: torch.Generator | None = None):
        self.model = model
        self.sample = sample
        self.generator = generator
        self.quantiles: dict[tuple[int, str], float] = {}
        self.passed: dict[tuple[int, str], torch.Tensor] = {}
        self.elements: dict[tuple[int, str], int] = {}
        self.theta: dict[tuple[int, str], torch.Tensor] = {}

    def _observe(self, site: ActivationThreshold, x: torch.Tensor, y: torch.Tensor) -> None:
        key = (site.layer, site.projection)
        self.passed[key] = self.passed.get(key, 0) + torch.count_nonzero(y.detach())
        self.elements[key] = self.elements.get(key, 0) + y.numel()
        q = self.quantiles.get(key)
        if q is None:
            return
        flat = x.detach().reshape(-1)
        k = int(round(q * self.sample))
        if k <= 0:
            self.theta[key] = torch.zeros((), device=flat.device)
            return
        idx = torch.randint(flat.numel(), (self.sample,), device=flat.device, generator=self.generator)
        self.theta[key] = flat[idx].abs().float().kthvalue(min(k, self.sample)).values

    def read(self) -> tuple[dict, dict]:
        """(density, θ estimate of the last forward) per site as floats, with one transfer from the device."""
        keys_d, keys_t = list(self.passed), list(self.theta)
        vals = torch.stack([self.passed[k].double() for k in keys_d] + [self.theta[k].double() for k in keys_t]).tolist()
        out = ({k: v / self.elements[k] for k, v in zip(keys_d, vals[: len(keys_d)])}, dict(zip(keys_t, vals[len(keys_d):])))
        self.passed, self.elements, self.theta = {}, {}, {}
        return out


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      ce_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, KL(teacher ‖ student) per token, the student's cross-entropy on `targets`), in float32."""
    v = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, v), dim=-1)
    t = F.log_softmax(teacher_logits.float().reshape(-1, v), dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="batchmean")
    ce = F.nll_loss(s, targets.reshape(-1))
    return (kl + ce_weight * ce if ce_weight else kl), kl, ce


def _windows(stream: torch.Tensor, batch: int, context: int, rng: np.random.Generator) -> torch.Tensor:
    """`batch` windows of `context + 1` tokens at random offsets of the (device) stream."""
    starts = torch.from_numpy(rng.integers(0, stream.numel() - context - 1, size=batch)).to(stream.device)
    return stream[starts[:, None] + torch.arange(context + 1, device=stream.device)[None, :]].long()


def _check(model: CausalLM, ids: torch.Tensor) -> tuple[float, SparsityReport]:
    """Mean NLL on the check stream and the sparsity there, run as evaluation runs text (eval mode, float32)."""
    was_training = model.training
    model.eval()
    with SparsityMeter(model) as meter:
        nll = perplexity(model, ids).nll
    model.train(was_training)
    if not math.isfinite(nll):
        raise DataError("the loss on the check stream is NaN or infinite; lower `lr`")
    return nll, SparsityReport.from_meter(model, meter)


def _report(model: CausalLM, zero_fractions: dict) -> SparsityReport:
    return SparsityReport(tuple(model.PROJECTIONS), model.site_shapes(), model.n_layer, dict(zero_fractions))


def _stream_print(ids: torch.Tensor) -> list[int]:
    """A text stream told apart cheaply: its length and the sum of a strided sample of its ids."""
    return [int(ids.numel()), int(ids[:: max(1, ids.numel() // 4096)].sum())]


def _write_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, tmp)


def _read_checkpoint(path: Path, settings: dict, origin: dict, dev: torch.device) -> dict:
    """The saved run in `path`, checked against this call's settings and inputs (a mismatch is one clear error)."""
    try:
        saved = torch.load(path, map_location=dev, weights_only=False)
    except Exception as e:  # not a torch file, cut short, unreadable
        raise DataError(f"`checkpoint` {path}: not a readable fine-tuning checkpoint ({type(e).__name__}); delete it to start "
                        "afresh, or give the checkpoint of this run") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"`checkpoint` {path}: not a fine-tuning checkpoint of eventllm; delete it or give another path")
    if saved.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"`checkpoint` {path}: version {saved.get('version')} of the checkpoint format, this eventllm reads "
                        f"{CHECKPOINT_VERSION}; delete it to start afresh")
    what = {"model": "another `model` (as given, before fine-tuning)", "teacher": "another `teacher`",
            "train": "another training text (`data`)", "check": "another check stream (`data`, `split`, `check_tokens`, `seed`)"}
    for key, text in what.items():
        if saved["origin"].get(key) != origin[key]:
            raise ConfigError(f"`checkpoint` {path} is of a run with {text}; give the same options as when it started, "
                              "or delete it to start afresh")
    for key, value in settings.items():
        if saved["settings"].get(key) != value:
            raise ConfigError(f"`checkpoint` {path} is of a run with {key} = {saved['settings'].get(key)!r}, this call has "
                              f"{value!r}; give the same options as when it started, or delete it to start afresh")
    return saved


class WeightAverage:
    """An exponential moving average of a model's trainable weights (Polyak averaging): after each optimiser step
    avg ← decay·avg + (1 − decay)·w, starting from the weights as given. The average of a run at a high learning rate
    lies nearer the minimum than the iterate, whose noise alone moves the perplexity by 1–2% in zoo:rwkv4-small
    fine-tuning runs at 3e-4 (docs/HISTORY.md): the checks measure, and the run keeps, the average."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"weight average decay {decay!r}: give a decay per step in (0, 1), e.g. 0.995")
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.avg = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self):
        """The model holds the averaged weights inside the block, its own (trained) ones again after it."""
        saved = [p.detach().clone() for p in self.params]
        self.load()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, saved):
                    p.copy_(w)

    @torch.no_grad()
    def load(self) -> None:
        """Put the averaged weights into the model (for good)."""
        for p, a in zip(self.params, self.avg):
            p.copy_(a)


@dataclass
class _State:
    """A state of the run measured on the check stream: its step, NLL, sparsity, where its weights are ("start": the
    model as given; "snapshot": `weights`; "final": the model as it is) and its θ."""

    step: int
    nll: float
    report: SparsityReport
    source: str
    thetas: dict
    weights: dict | None = None
    scale: float = 1.0  # the factor the θ were scaled by at the end (< 1: the back-off; > 1: the raise)


def _reaches(report: SparsityReport, target: float | None) -> bool:
    return target is not None and report.mac_skipped() >= target - REACHED_TOLERANCE


def _best(states: list[_State], target: float | None) -> _State:
    """With a target: of the states that reach it, the one of lowest loss; else (or when none does) the sparsest."""
    reaching = [c for c in states if _reaches(c.report, target)]
    if reaching:
        return min(reaching, key=lambda c: c.nll)
    return max(states, key=lambda c: c.report.mac_skipped())


def _keep(kept: list[_State], state: _State, target: float | None) -> None:
    """Keep `state` (one within the bound) in place of the snapshot kept so far when it is better."""
    snapshots = [c for c in kept if c.source == "snapshot"]
    if not snapshots or _best([snapshots[0], state], target) is state:
        kept[:] = [c for c in kept if c.source != "snapshot"] + [state]


RAISE_MAX = 1.25  # the end raise looks for its factor in [1, RAISE_MAX]


def _largest_scale(model: CausalLM, check: torch.Tensor, thetas: dict, lo: float, hi: float, allowed,
                   runs: dict | None = None) -> tuple[float, dict]:
    """The largest factor f in [lo, hi] (bisected in 6 check runs, ok(lo) assumed) at which θ × f keeps the check
    stream `allowed`, and every check run made: {f: (nll, report)} (`runs`: those known already)."""
    runs = dict(runs or {})

    def ok(f: float) -> bool:
        if f not in runs:
            model.set_thetas({k: v * f for k, v in thetas.items()})
            runs[f] = _check(model, check)
        return allowed(runs[f][0])

    return _bisect(ok, lo, hi, steps=6)[0], runs


def _raised(model: CausalLM, check: torch.Tensor, state: _State, allowed) -> _State:
    """`state` (the model holds it, within the bound) with its θ scaled up by the largest common factor f in
    [1, RAISE_MAX] whose check stream stays `allowed` (f to 0.4%); the model is left with the raised θ. Bisection, not
    the training-free final scale's secant search: a fine-tuned state's increase is often below 0 at θ × 1 and then
    climbs steeply (session 34's run: −0.18% at × 1, +0.65% at × 1.02, +1.86% at × 1.05 on its check stream), which
    the secant's power law c·s^p does not follow."""
    f, runs = _largest_scale(model, check, state.thetas, 1.0, RAISE_MAX, allowed, {1.0: (state.nll, state.report)})
    thetas = {k: v * f for k, v in state.thetas.items()}
    model.set_thetas(thetas)
    if f == 1.0:
        return state
    return _State(state.step, *runs[f], state.source, thetas, state.weights, scale=state.scale * f)


def _end_state(model: CausalLM, check: torch.Tensor, final: _State, kept: list[_State], allowed, target: float | None,
               bounded: bool) -> _State:
    """Without a bound, the final state. With one, the best of the final state (when within the bound) and the states
    kept; a final state above the bound, when nothing kept reaches the target, is offered with its θ scaled down by
    the largest factor within the bound."""
    if not bounded:
        return final
    states = list(kept)
    if allowed(final.nll):
        states.append(final)
    elif not any(_reaches(c.report, target) for c in states):
        f, runs = _largest_scale(model, check, final.thetas, 0.0, 1.0, allowed)
        if f > 0:  # its check run is the bisection's
            states.append(_State(final.step, *runs[f], "final", {k: v * f for k, v in final.thetas.items()}, scale=f))
        model.set_thetas(final.thetas)
    return _best(states, target) if states else final


# --- after the run: the precision written and the bound on fresh text -----------------------------------------------
def round_to_bf16(model: CausalLM, check: torch.Tensor, loss_dense: float) -> dict:
    """Round the model's weights to bfloat16 in place (half the file) and measure it again on the check stream, so that
    a thresholds file tied to the weights' fingerprint carries the figures of the weights written."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))
    nll, rep = _check(model, check)
    return {"dtype": "bfloat16", "ppl_increase_on_check_vs_teacher": math.exp(nll - loss_dense) - 1,
            "mac_weighted_sparsity_on_check": rep.mac_skipped(), "sparsity_on_check": rep.average()}


def fresh_stream(check_ids, check_tokens: int, seed: int, tokens: int) -> torch.Tensor:
    """Up to `tokens` tokens of `check_ids` beside its check stream (the text before it and after it, as one stream):
    text the run never measured itself on. Fewer than 2 is an error, raised before a run rather than after it."""
    from eventllm.sparsity.calibrate import check_stream_start

    ids = torch.as_tensor(check_ids, dtype=torch.long)
    start, n = check_stream_start(ids.numel(), check_tokens, seed)
    fresh = torch.cat([ids[:start], ids[start + n:]])[:tokens]
    if fresh.numel() < 2:
        raise DataError(f"the text has no tokens beside its {n:,}-token check stream to recheck on; check on fewer tokens "
                        "or give a larger split")
    return fresh


def recheck(model: CausalLM, dense: CausalLM, fresh: torch.Tensor, limit: float, device) -> dict:
    """The end state on `fresh` text against the `dense` reference: the run kept the best of the states that passed on
    its check stream, whose noise then flatters it. Where the increase is above `limit`, θ is scaled down by the largest
    common factor within it there (the model is left with the scaled θ). Returns the figures of both."""
    from eventllm.sparsity.calibrate import largest_scale_within

    model.to(device)
    dense.to(device)
    try:
        dense_nll = _check(dense, fresh)[0]
        theta = model.get_thetas()
        seen: dict[float, tuple[float, SparsityReport]] = {}

        def increase(s: float) -> float:
            model.set_thetas({k: v * s for k, v in theta.items()})
            nll, rep = _check(model, fresh)
            seen[s] = (math.exp(nll - dense_nll) - 1.0, rep)
            return seen[s][0]

        scale = largest_scale_within(increase, limit, cap=1.0)
        if scale not in seen:  # 0: no scale passed, and θ = 0 is measured only now
            increase(scale)
        model.set_thetas({k: v * scale for k, v in theta.items()})
    finally:
        model.to("cpu")
        dense.to("cpu")
    inc, rep = seen[scale]
    return {"tokens": int(fresh.numel()), "scale": scale, "ppl_increase_vs_teacher_before": seen[1.0][0],
            "ppl_increase_vs_teacher": inc, "within_bound": inc <= limit, "mac_weighted_sparsity": rep.mac_skipped(),
            "sparsity": rep.average(), "runs": len(seen)}
