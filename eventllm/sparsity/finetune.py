"""Sparsity-aware fine-tuning: the weights and the thresholds trained together, distilled from the dense model
(ProSparse-like). The training-based comparator of the paper's training-free search, and how eventllm's sparse
models are made (`examples/zoo/rwkv4-small-sparse.toml`).

    eventllm calibrate --method finetune --model zoo:rwkv4-small --data ../shared/data/pg-books \\
        --target-sparsity 0.7 --max-ppl-increase 0.01 --max-seconds 240 -o thr.json --output-model ft.safetensors

A run is a `FinetuneConfig` (what is asked, validated before any work) and a `FinetuneRun` (the run state: step,
check, pause to a checkpoint, end state); `finetune` makes both and runs it.

- Teacher: a frozen copy of the model as it is given, dense (θ = 0 at every site). Student: the model itself, every
  weight trainable, a threshold at every site.
- The threshold in training is the one evaluation runs (`ActivationThreshold`): the forward is exactly
  T_θ(x) = x·[|x| > θ], so the model trained is the model measured. Its gradient with respect to x is the mask
  [|x| > θ] (straight-through for the inputs that pass). θ gets no gradient: it is scheduled, so a given
  MAC-weighted sparsity is reached by construction rather than through a penalty's weight.
- Loss: KL(teacher ‖ student) per token on the logits, plus `ce_weight` × the cross-entropy on the text (default 0:
  the quality bound is relative to the dense model, so its predictions are the target).
- The schedule sets each site's density (the share of its inputs that pass), not θ. The MAC-weighted sparsity level
  S rises from the start's S0 to the goal along the cubic of gradual pruning (Zhu & Gupta 2017; linear when only a
  perplexity bound is given) over the first `ramp` share of the budget (steps or seconds, whichever ends first).
  Every site's density shrinks by one common factor, d_i = d_i(0)·(1 − S)/(1 − S0), so the MAC-weighted density is
  exactly 1 − S and the allocation across sites is the start's (from θ = 0, every site other than the naturally
  sparse ones gets the same density). θ_i follows the quantile of |x_i| at 1 − d_i, estimated every step on a sample
  of the site's inputs and smoothed (EMA): a quantile holds the site's sparsity wherever fine-tuning moves the
  activations' magnitudes, where a fixed θ could be escaped by growing them.
- Recovery: after the ramp the densities stay at the goal while training goes on; over the last `freeze` share of
  the budget θ is fixed, so the final weights were trained at their final θ. AdamW without weight decay (it would pull
  the weights away from the teacher's), linear warm-up, constant through the ramp, cosine to a tenth over the recovery.
- Weight averaging (`weight_average`, e.g. 0.995; off by default): the checks measure, and the run keeps, an
  exponential moving average of the weights rather than the last iterate, whose noise at a high learning rate alone
  moves the perplexity by 1–2% (docs/HISTORY.md has the runs).
- The bound: every `check_every` steps the student runs the held-out check stream as `eventllm evaluate` runs text
  (one stream, the state carried, float32), its perplexity compared with the teacher's on the same tokens. Above
  `safety` × `max_ppl_increase` the ramp holds; on a second failure in a row it backs off to the level of the last
  check within the bound. Each check above the bound halves the pace of the ramp's clock (to an eighth at least),
  each one within it gives back a quarter: near where the bound binds the level rises in steps training can follow.
  The states of the checks within the bound are kept (the best so far), and the end state is the best of the final
  state and those, within the bound on the check stream (the start is the fallback; a final state above the bound is
  also offered with its θ scaled down). The gap between the sparsity on training windows and on the check stream is
  measured at every check and added to the goal, so the target is met on the check stream.
- `seconds_to_target`: wall time to the first check that had the target within the bound, the figure to set beside
  the training-free search's time on the same GPU.
- Pause and resume (`checkpoint`, `pause_after_seconds`): the whole run state (weights, θ, AdamW, the weight
  average, the kept snapshot, the ramp's clock and pace, the history, every random generator) is saved, and the same
  call again goes on from it; a `max_seconds` budget counts the run's own time over its calls, so one run can be
  longer than one command may last on a lent machine.

GPU: bf16 autocast for teacher and student (float32 master weights), gradient clipping, the fused WKV kernel of RWKV;
the checks in float32. The CPU works too (slowly), which the tests use.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eventllm.errors import ConfigError, DataError
from eventllm.models.base import CausalLM
from eventllm.models.device import torch_device
from eventllm.sparsity.calibrate import check_stream
from eventllm.sparsity.finetune_parts import (
    SiteTracker, WeightAverage, _check, _end_state, _keep, _raised, _reaches, _read_checkpoint, _report, _State,
    _stream_print, _windows, _write_checkpoint, distillation_loss,
)

# the level the ramp heads for when only a perplexity bound is given (the bound stops it earlier)
MAX_LEVEL = 0.98
# the goal on the training windows sits this far above the target, so that the check stream lands on it
MARGIN = 0.003
# the pace of the ramp's clock: × PACE_DOWN after each check above the bound (not below MIN_PACE), × PACE_UP after each
# one within it (not above 1)
PACE_DOWN, PACE_UP, MIN_PACE = 0.5, 1.25, 0.125


class FinetunePaused(Exception):
    """`finetune` paused (`pause_after_seconds` / `pause_after_steps`) with the whole run saved in `checkpoint`: the same
    call again, with the same model, data and settings, goes on from there as if it had not stopped."""

    def __init__(self, step: int, seconds: float, checkpoint: Path):
        super().__init__(f"paused at step {step} after {seconds:.1f} s of the budget; the run is saved in {checkpoint}")
        self.step, self.seconds, self.checkpoint = step, seconds, checkpoint


@dataclass
class FinetuneResult:
    thetas: dict[tuple[int, str], float]
    loss_dense: float  # the teacher's (the dense model as given) mean NLL on the check stream
    loss_final: float  # the fine-tuned model's with its θ, same tokens
    mac_weighted: float  # MAC-weighted sparsity on the check stream, end state
    sparsity: float  # mean over sites, the same
    natural_mac_weighted: float  # the teacher's (θ = 0) on the check stream
    natural_sparsity: float
    start_mac_weighted: float  # the model as given, with its start θ, on the check stream
    train_mac_weighted: float  # on the training windows of the last steps
    within_bound: bool | None  # None: no bound was given
    steps: int
    tokens: int  # training tokens the student saw
    seconds: float
    seconds_to_target: float | None
    steps_to_target: int | None
    kept_step: int  # the step whose weights and θ are the end state
    end_scale: float  # < 1: the final θ were scaled down by this factor to be within the bound; > 1: raised within it
    check_tokens: int
    device: str
    settings: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def ppl_increase(self) -> float:
        return math.exp(self.loss_final - self.loss_dense) - 1.0

    def meta(self) -> dict:
        return {
            "method": "sparsity-aware fine-tuning (weights trained with scheduled θ, distilled from the dense model by KL "
                      "on the logits; straight-through gradient through the thresholds)",
            "loss_dense_teacher": self.loss_dense, "loss_thresholded": self.loss_final,
            "ppl_increase_on_check_vs_teacher": self.ppl_increase, "within_bound": self.within_bound,
            "mac_weighted_sparsity_on_check": self.mac_weighted, "sparsity_on_check": self.sparsity,
            "natural_mac_weighted_sparsity_on_check": self.natural_mac_weighted, "natural_sparsity_on_check": self.natural_sparsity,
            "start_mac_weighted_sparsity_on_check": self.start_mac_weighted, "mac_weighted_sparsity_on_training": self.train_mac_weighted,
            "steps": self.steps, "training_tokens": self.tokens, "seconds": self.seconds, "seconds_to_target": self.seconds_to_target,
            "steps_to_target": self.steps_to_target, "kept_step": self.kept_step, "end_scale": self.end_scale,
            "check_tokens": self.check_tokens,
            "device": self.device, "settings": self.settings,
            "checks": [dict(h) for h in self.history if h.get("check")],
        }


def resolve_device(device: str | None) -> torch.device:
    """`device`, or CUDA when there is one (else the CPU); a CUDA device that is not there is refused."""
    dev = torch_device(device)
    if dev.type not in ("cuda", "cpu"):
        raise ConfigError(f"`device` {device}: fine-tuning runs on cuda or cpu")
    return dev


@dataclass
class Schedule:
    """The plan over the budget (a share p of it used, 0 → 1): the MAC-weighted sparsity level, each site's target
    sparsity, the learning rate. `d0`: each site's density at the start, `s0` the start's MAC-weighted sparsity."""

    d0: dict[tuple[int, str], float]
    s0: float
    target: float | None  # None: only a perplexity bound, the level heads for MAX_LEVEL
    ramp: float
    freeze: float
    lr: float
    warmup: int

    def level(self, ramp_clock: float, offset: float = 0.0) -> float:
        """The level after `ramp_clock` of the budget spent ramping; `offset` (training windows minus check stream) is
        added to the target."""
        u = min(1.0, ramp_clock / self.ramp)
        if self.target is None:
            return self.s0 + (MAX_LEVEL - self.s0) * u
        goal = min(MAX_LEVEL, self.target + offset + MARGIN)
        return self.s0 + (goal - self.s0) * (1.0 - (1.0 - u) ** 3)

    def site_targets(self, level: float) -> dict[tuple[int, str], float]:
        """Each site's target sparsity: its start density shrunk by the common factor that makes the MAC-weighted
        sparsity `level`."""
        factor = (1.0 - level) / (1.0 - self.s0)
        return {k: 1.0 - min(1.0, d * factor) for k, d in self.d0.items()}

    def frozen(self, p: float) -> bool:
        return p >= 1.0 - self.freeze

    def rate(self, step: int, p: float) -> float:
        """Linear warm-up, constant through the ramp, cosine to a tenth over the recovery."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if p < self.ramp:
            return self.lr
        into = min(1.0, (p - self.ramp) / max(1e-9, 1.0 - self.ramp))
        return self.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * into)))


@dataclass
class FinetuneConfig:
    """What a fine-tuning run is asked to do (see `finetune`); `validate` refuses a request before any work."""

    target_sparsity: float | None = None
    max_ppl_increase: float | None = None
    steps: int | None = None
    max_seconds: float | None = None
    lr: float = 1e-4
    warmup: int = 100
    batch_size: int = 16
    context: int = 512
    ramp: float = 0.7
    freeze: float = 0.1
    check_every: int = 100
    check_tokens: int = 32768
    safety: float = 0.9
    ce_weight: float = 0.0
    grad_clip: float = 1.0
    sample: int = 16384
    ema: float = 0.3
    seed: int = 0
    weight_average: float = 0.0
    raise_end: bool = True

    def validate(self, model: CausalLM) -> None:
        _check_request(model, self.target_sparsity, self.max_ppl_increase, self.steps, self.max_seconds, self.lr,
                       self.batch_size, self.context, self.check_every, self.ce_weight, self.safety, self.ramp, self.freeze,
                       self.weight_average)
        if self.steps is None and self.max_seconds is None:
            self.steps = 2000

    def settings(self, device: torch.device) -> dict:
        """The settings a checkpoint must match to be gone on from (the goals and the schedule, not the pause)."""
        return {k: getattr(self, k) for k in _SETTINGS} | {"autocast": "bf16" if device.type == "cuda" else None}


_SETTINGS = ("target_sparsity", "max_ppl_increase", "steps", "max_seconds", "lr", "warmup", "batch_size", "context", "ramp",
             "freeze", "check_every", "check_tokens", "safety", "ce_weight", "grad_clip", "sample", "ema", "seed",
             "weight_average", "raise_end")


def finetune(model: CausalLM, train_ids, check_ids, *, device: str | None = None, teacher: CausalLM | None = None,
             progress: bool = True, checkpoint: str | Path | None = None, pause_after_seconds: float | None = None,
             pause_after_steps: int | None = None, **settings) -> FinetuneResult:
    """Fine-tune `model` (weights and θ, see the module docstring) on windows of `train_ids` until the MAC-weighted
    sparsity reaches `target_sparsity`, keeping the perplexity on the check stream (`check_tokens` of `check_ids`)
    within `max_ppl_increase` of the dense model's; either goal alone works too (`settings`: the fields of
    `FinetuneConfig`). The model's θ when called are the start (0: from the natural zeros). The budget: `steps`
    optimiser steps or `max_seconds` (from the call), whichever ends first (2000 steps when neither is given). The model
    is left with the end state's weights and θ, in eval mode, on the device it came on.

    `teacher`: the model to distil from, used as it is (eval mode, never updated, its θ as they are: 0 for a dense
    model); default: a frozen copy of `model` as given, θ = 0.

    `raise_end`: an end state within the bound that falls short of `target_sparsity` (or has no target) gets its θ raised
    by the largest common factor in [1, 1.25] within `safety` × `max_ppl_increase` on the check stream (bisected, 6
    check runs): a run whose schedule ran out of time with bound to spare spends it (`end_scale` records the factor).
    Without a bound it does nothing.

    `checkpoint`: where the run saves itself when it pauses, after `pause_after_seconds` of this call or at step
    `pause_after_steps` (raising `FinetunePaused`); when that file exists, the run goes on from it instead of starting
    (the same `model` as given, teacher, data and settings are required, and checked). A budget in seconds counts the
    run's own time over all its calls: one run longer than a machine's per-command limit, in several calls. The
    resumed run is the one that did not stop (bit for bit on a CPU with a step budget; the test checks it). The file
    is a torch pickle (optimiser state, weights, the kept snapshot): load only your own.

    >>> r = finetune(model, train_ids, valid_ids, target_sparsity=0.7, max_ppl_increase=0.01, max_seconds=240)  # doctest: +SKIP
    >>> r.mac_weighted, r.ppl_increase, r.seconds_to_target                                                    # doctest: +SKIP
    """
    config = FinetuneConfig(**settings)
    config.validate(model)
    if (pause_after_seconds is not None or pause_after_steps is not None) and checkpoint is None:
        raise ConfigError("pausing saves the run to a checkpoint: give `checkpoint` PATH with `pause_after`")
    if pause_after_seconds is not None and not pause_after_seconds > 0:
        raise ConfigError(f"`pause_after` = {pause_after_seconds!r}: give a number of seconds > 0")
    run = FinetuneRun(model, train_ids, check_ids, config, resolve_device(device), teacher, progress,
                      Path(checkpoint) if checkpoint is not None else None)
    return run.run(pause_after_seconds, pause_after_steps)


class FinetuneRun:
    """One fine-tuning run: its inputs on the device, the schedule, the optimiser, the weight average and every piece
    of run state a checkpoint carries; `run` steps it to the end (or to a pause) and returns the `FinetuneResult`."""

    def __init__(self, model: CausalLM, train_ids, check_ids, config: FinetuneConfig, dev: torch.device,
                 teacher: CausalLM | None, progress: bool, checkpoint: Path | None):
        c = self.c = config
        self.t0, self.before = time.perf_counter(), 0.0  # the run's time in earlier calls (a resumed run)
        self.model, self.dev, self.progress, self.checkpoint = model, dev, progress, checkpoint
        given_fingerprint = model.fingerprint()
        c.context = min(c.context, getattr(model.config, "max_positions", c.context))  # fixed-context models: within their positions
        stream = torch.from_numpy(np.asarray(train_ids).astype(np.int64, copy=False)).flatten()
        if stream.numel() < c.context + 2:
            raise DataError(f"fine-tuning needs more than {c.context + 1} tokens of training text, got {stream.numel()}; pass "
                            "more text or a smaller `context`")
        self.check = check_stream(check_ids, c.check_tokens, c.seed)
        if self.check.numel() < 2:
            raise DataError("the check stream has fewer than 2 tokens; pass more text")
        c.warmup = max(1, min(c.warmup, (c.steps or 10 * c.warmup) // 10))  # at most a tenth of a step budget
        self.settings = c.settings(dev)
        self.home = next(model.parameters()).device
        model.to(dev)
        self.stream = stream.to(dev)
        torch.manual_seed(c.seed)
        self.rng = np.random.default_rng(c.seed)
        self.amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else contextlib.nullcontext
        self.sites = model.threshold_sites()
        self.own_teacher = teacher is None
        if self.own_teacher:
            teacher = copy.deepcopy(model)
            teacher.set_thetas(0.0)
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.start_weights = teacher.state_dict()  # the model as given (the fallback end state)
        else:
            self.start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.teacher, self.teacher_home = teacher, next(teacher.parameters()).device
        teacher.to(dev).eval()
        model.set_dropout(0.0)
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        self.tracker = SiteTracker(model, c.sample, torch.Generator(device=dev).manual_seed(c.seed))
        self.probe = _windows(self.stream, max(2 * c.batch_size, 8), c.context, self.rng)  # measured at every check
        # what a checkpoint must have been written by: the model as given, the teacher, the texts (length and a sample)
        self.origin = {"model": given_fingerprint, "teacher": None if self.own_teacher else teacher.fingerprint(),
                       "train": _stream_print(self.stream), "check": _stream_print(self.check)}
        # no weight decay: it would pull the weights away from the teacher's, where they are meant to stay near
        self.opt = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
        self.average = WeightAverage(model, c.weight_average) if c.weight_average else None
        self.measured = self.average.swapped if self.average else contextlib.nullcontext  # the weights the checks measure

    # --- measures ---------------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.t0

    def budget_used(self, step: int) -> float:
        used = step / self.c.steps if self.c.steps else 0.0
        return max(used, self.elapsed() / self.c.max_seconds) if self.c.max_seconds else used

    def allowed(self, nll: float) -> bool:
        c = self.c
        return c.max_ppl_increase is None or math.exp(nll - self.loss_dense) - 1.0 <= c.safety * c.max_ppl_increase

    def probe_density(self) -> dict:
        self.tracker.quantiles = {}  # densities only (each step sets its own targets)
        with torch.no_grad(), self.amp(), self.tracker:
            for i in range(0, self.probe.shape[0], self.c.batch_size):
                self.model(self.probe[i : i + self.c.batch_size, :-1])
        return self.tracker.read()[0]

    def train_mac(self, density: dict) -> float:
        return _report(self.model, {k: 1.0 - d for k, d in density.items()}).mac_skipped()

    # --- start, resume, pause -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """The run's state at step 0: the dense and start checks, the schedule from the start's densities."""
        c, model = self.c, self.model
        self.loss_dense, self.natural = _check(self.teacher, self.check)
        d0 = self.probe_density()
        self.plan = Schedule(d0, min(self.train_mac(d0), 1.0 - 1e-6), c.target_sparsity, c.ramp, c.freeze, c.lr, c.warmup)
        self.nll0, self.rep0 = self.last_check = _check(model, self.check)
        self.history = [{"step": 0, "seconds": self.elapsed(), "check": True, "level": self.plan.s0,
                         "check_mac_weighted": self.rep0.mac_skipped(),
                         "ppl_increase": math.exp(self.nll0 - self.loss_dense) - 1.0, "ok": self.allowed(self.nll0),
                         "theta_mean": float(np.mean([s.theta for s in self.sites]))}]
        # states within the bound: the start, and the best checked one since (one copy of the weights)
        self.kept = [_State(0, self.nll0, self.rep0, "start", model.get_thetas())] if self.history[0]["ok"] else []
        offset = float(np.clip(self.plan.s0 - self.rep0.mac_skipped(), -0.05, 0.05))  # training windows minus check stream
        # the ramp's clock stands still while the bound is exceeded, and runs slower after it was: the level then rises
        # in smaller steps near where the bound binds
        values = (offset, 0.0, self.budget_used(0), 1.0, False, 0, 0.0, [], None, None, 0, 0)
        for name, value in zip(_RUN_STATE, values):
            setattr(self, name, value)

    def resume(self, saved: dict) -> None:
        """Every piece of run state as it was when the run paused."""
        c, model = self.c, self.model
        model.load_state_dict(saved["weights"])
        model.set_thetas(saved["thetas"])
        self.opt.load_state_dict(saved["optimizer"])
        if self.average:
            with torch.no_grad():
                for a, b in zip(self.average.avg, saved["average"]):
                    a.copy_(b)
        self.rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"].cpu())  # generator states are CPU byte tensors (map_location moved them)
        self.tracker.generator.set_state(saved["tracker_rng"].cpu())
        for k in ("loss_dense", "natural", "nll0", "rep0", "last_check", "history", "kept"):
            setattr(self, k, saved[k])
        self.plan = Schedule(saved["d0"], saved["s0"], c.target_sparsity, c.ramp, c.freeze, c.lr, c.warmup)
        for name in _RUN_STATE:
            setattr(self, name, saved["run"][name])
        self.before, self.t0 = saved["elapsed"], time.perf_counter()
        if self.progress:
            print(f"resuming from {self.checkpoint}: step {self.step}, {self.before:.1f} s of the run so far")

    def pause(self) -> None:
        _write_checkpoint(self.checkpoint, {
            "settings": self.settings, "origin": self.origin, "elapsed": self.elapsed(),
            "run": {name: getattr(self, name) for name in _RUN_STATE},
            "weights": self.model.state_dict(), "thetas": self.model.get_thetas(), "optimizer": self.opt.state_dict(),
            "average": self.average.avg if self.average else None, "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "tracker_rng": self.tracker.generator.get_state(),
            "loss_dense": self.loss_dense, "natural": self.natural, "nll0": self.nll0, "rep0": self.rep0,
            "last_check": self.last_check, "d0": self.plan.d0, "s0": self.plan.s0, "history": self.history, "kept": self.kept})
        raise FinetunePaused(self.step, self.elapsed(), self.checkpoint)

    # --- a step and a check -----------------------------------------------------------------------------------------
    def train_step(self, p: float) -> dict:
        """One optimiser step at the schedule's level for budget share `p`; θ follow their sites' quantiles."""
        c, model = self.c, self.model
        self.ramp_clock += 0.0 if self.held else self.pace * (p - self.p_prev)
        self.p_prev = p
        level = self.plan.level(self.ramp_clock, self.offset)
        self.tracker.quantiles = {} if self.plan.frozen(p) else self.plan.site_targets(level)
        for g in self.opt.param_groups:
            g["lr"] = self.plan.rate(self.step, p)
        x = _windows(self.stream, c.batch_size, c.context, self.rng)
        with torch.no_grad(), self.amp():
            t_logits = self.teacher(x[:, :-1])[0]
        with self.amp(), self.tracker:
            s_logits = model(x[:, :-1])[0]
        loss, kl, ce = distillation_loss(s_logits, t_logits, x[:, 1:], c.ce_weight)
        del t_logits, s_logits
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        self.opt.step()
        if self.average:
            self.average.update()
        density, estimate = self.tracker.read()
        for s in self.sites:  # θ follows the quantile at the site's target (smoothed)
            if (key := (s.layer, s.projection)) in estimate:
                s.theta = float(s.theta + c.ema * (estimate[key] - s.theta))
        self.recent = (self.recent + [self.train_mac(density)])[-10:]
        self.step += 1
        self.tokens += c.batch_size * c.context
        return {"step": self.step, "seconds": self.elapsed(), "level": level, "train_mac_weighted": self.recent[-1],
                "kl": float(kl.detach()), "ce": float(ce.detach()), "lr": self.opt.param_groups[0]["lr"]}

    def check_bound(self, entry: dict) -> None:
        """The check stream at this step: keep the state when within the bound, else hold the ramp (and back off on a
        second failure in a row); the figures go into `entry`."""
        c = self.c
        with self.measured():
            nll, rep = self.last_check = _check(self.model, self.check)
            ok, mac, inc = self.allowed(nll), rep.mac_skipped(), math.exp(nll - self.loss_dense) - 1.0
            if c.target_sparsity is not None:  # the gap between training windows and check stream at the same θ
                self.offset = float(np.clip(0.5 * self.offset + 0.5 * (self.train_mac(self.probe_density()) - mac), -0.05, 0.05))
            if ok:
                _keep(self.kept, _State(self.step, nll, rep, "snapshot", self.model.get_thetas(),
                                        {k: v.detach().clone() for k, v in self.model.state_dict().items()}), c.target_sparsity)
        if ok:
            self.held, self.fails, self.last_ok_clock = False, 0, self.ramp_clock
            self.pace = min(1.0, self.pace * PACE_UP)
            if self.reached_s is None and _reaches(rep, c.target_sparsity):
                self.reached_s, self.reached_step = self.elapsed(), self.step
        else:  # hold the level; a second failure in a row: back to the level of the last check within the bound
            self.held, self.fails = True, self.fails + 1
            self.pace = max(MIN_PACE, self.pace * PACE_DOWN)
            if self.fails >= 2:
                self.ramp_clock = min(self.ramp_clock, self.last_ok_clock)
        entry |= {"check": True, "check_mac_weighted": mac, "check_sparsity": rep.average(), "ppl_increase": inc, "ok": ok,
                  "held": self.held, "pace": self.pace, "offset": self.offset,
                  "theta_mean": float(np.mean([s.theta for s in self.sites]))}

    # --- the run ----------------------------------------------------------------------------------------------------
    def run(self, pause_after_seconds: float | None = None, pause_after_steps: int | None = None) -> FinetuneResult:
        from tqdm import tqdm

        try:
            saved = (_read_checkpoint(self.checkpoint, self.settings, self.origin, self.dev)
                     if self.checkpoint is not None and self.checkpoint.exists() else None)
            self.start() if saved is None else self.resume(saved)
            bar = tqdm(total=self.c.steps, initial=self.step, desc="fine-tuning", disable=not self.progress, unit="step")
            while (p := self.budget_used(self.step)) < 1.0:
                entry = self.train_step(p)
                bar.update(1)
                bar.set_postfix(kl=f"{entry['kl']:.4f}", level=f"{entry['level']:.3f}", sparsity=f"{self.recent[-1]:.3f}")
                if self.step % self.c.check_every == 0:
                    self.check_bound(entry)
                    if self.progress:
                        bar.write(f"step {self.step}: check ppl {100 * entry['ppl_increase']:+.2f}% vs dense, sparsity "
                                  f"MAC-weighted {100 * entry['check_mac_weighted']:.1f}% (the level on training windows "
                                  f"{100 * entry['level']:.1f}%)" + ("" if entry["ok"] else "; above the bound: holding"))
                self.history.append(entry)
                if ((pause_after_steps is not None and self.step >= pause_after_steps or pause_after_seconds is not None
                     and time.perf_counter() - self.t0 >= pause_after_seconds) and self.budget_used(self.step) < 1.0):
                    bar.close()
                    self.pause()
            bar.close()
            chosen = self.end()
        finally:
            self.tracker.quantiles = {}
            self.model.eval()
            self.model.to(self.home)
            if not self.own_teacher:
                self.teacher.to(self.teacher_home)
        return self.result(chosen)

    def end(self) -> _State:
        """The end state: the averaged weights checked once more, the best state within the bound, its θ raised where
        the bound has room; the model is left holding it."""
        from tqdm import tqdm

        c, model, history = self.c, self.model, self.history
        if self.average:  # the run's result is the averaged weights, the ones every check measured (a last check too)
            self.average.load()
        if not history[-1].get("check"):
            nll, rep = self.last_check = _check(model, self.check)
            history[-1] |= {"check": True, "check_mac_weighted": rep.mac_skipped(), "check_sparsity": rep.average(),
                            "ppl_increase": math.exp(nll - self.loss_dense) - 1.0, "ok": self.allowed(nll)}
            if self.progress:
                h = history[-1]
                tqdm.write(f"step {self.step} (the last): check ppl {100 * h['ppl_increase']:+.2f}% vs dense, sparsity "
                           f"MAC-weighted {100 * h['check_mac_weighted']:.1f}%" + ("" if h["ok"] else "; above the bound"))
        chosen = _end_state(model, self.check, _State(self.step, *self.last_check, "final", model.get_thetas()), self.kept,
                            self.allowed, c.target_sparsity, c.max_ppl_increase is not None)
        if chosen.source == "snapshot":
            model.load_state_dict(chosen.weights)
        elif chosen.source == "start":
            model.load_state_dict(self.start_weights)
        model.set_thetas(chosen.thetas)
        if (c.raise_end and c.max_ppl_increase is not None and self.allowed(chosen.nll)
                and not _reaches(chosen.report, c.target_sparsity)):
            chosen = _raised(model, self.check, chosen, self.allowed)
            if self.progress and chosen.scale > 1:
                tqdm.write(f"the end state's θ raised × {chosen.scale:.3f} within the bound: check ppl "
                           f"{100 * (math.exp(chosen.nll - self.loss_dense) - 1.0):+.2f}% vs dense, sparsity MAC-weighted "
                           f"{100 * chosen.report.mac_skipped():.1f}%")
        return chosen

    def result(self, chosen: _State) -> FinetuneResult:
        c = self.c
        return FinetuneResult(
            thetas=self.model.get_thetas(), loss_dense=self.loss_dense, loss_final=chosen.nll,
            mac_weighted=chosen.report.mac_skipped(), sparsity=chosen.report.average(),
            natural_mac_weighted=self.natural.mac_skipped(), natural_sparsity=self.natural.average(),
            start_mac_weighted=self.rep0.mac_skipped(),
            train_mac_weighted=float(np.mean(self.recent)) if self.recent else self.plan.s0,
            within_bound=None if c.max_ppl_increase is None else self.allowed(chosen.nll), steps=self.step,
            tokens=self.tokens, seconds=self.elapsed(), seconds_to_target=self.reached_s, steps_to_target=self.reached_step,
            kept_step=chosen.step, end_scale=chosen.scale, check_tokens=int(self.check.numel() - 1),
            device="cpu" if self.dev.type == "cpu" else torch.cuda.get_device_name(self.dev),
            settings=self.settings, history=self.history,
        )


# the run's scalars a checkpoint carries, in this order
_RUN_STATE = ("offset", "ramp_clock", "p_prev", "pace", "held", "fails", "last_ok_clock", "recent", "reached_s", "reached_step",
              "step", "tokens")


def _check_request(model, target_sparsity, max_ppl_increase, steps, max_seconds, lr, batch_size, context, check_every,
                   ce_weight, safety, ramp, freeze, weight_average=0.0) -> None:
    if target_sparsity is None and max_ppl_increase is None:
        raise ConfigError("fine-tuning needs a goal: a target sparsity (`target_sparsity`), a perplexity bound "
                          "(`max_ppl_increase`), or both")
    if target_sparsity is not None and not 0 < target_sparsity < 1:
        raise ConfigError(f"`target_sparsity` must be between 0 and 1 (MAC-weighted), got {target_sparsity}")
    if max_ppl_increase is not None and not 0 < max_ppl_increase < 10:
        raise ConfigError(f"`max_ppl_increase` must be a fraction such as 0.01 (1%), got {max_ppl_increase}")
    for name, value, ok, want in (("`steps`", steps, steps is None or steps >= 1, "an integer ≥ 1"),
                                  ("`max_seconds`", max_seconds, max_seconds is None or max_seconds > 0, "a number > 0"),
                                  ("`lr`", lr, 0 < lr < 1, "a learning rate in (0, 1), e.g. 3e-4"),
                                  ("`batch_size`", batch_size, batch_size >= 1, "an integer ≥ 1"),
                                  ("`context`", context, context >= 2, "an integer ≥ 2"),
                                  ("`check_every`", check_every, check_every >= 1, "an integer ≥ 1"),
                                  ("`ce_weight`", ce_weight, ce_weight >= 0, "a weight ≥ 0"),
                                  ("`weight_average`", weight_average, 0 <= weight_average < 1,
                                   "a decay per step in [0, 1), e.g. 0.995 (0: off)"),
                                  ("`safety`", safety, 0 < safety <= 1, "a share in (0, 1]"),
                                  ("ramp", ramp, 0 < ramp <= 1, "a share of the budget in (0, 1]"),
                                  ("freeze", freeze, 0 <= freeze <= 1 - ramp, "a share of the budget in [0, 1 - ramp]")):
        if not ok:
            raise ConfigError(f"{name} = {value!r}: give {want}")
    if model.scores != "magnitude":
        raise ConfigError("fine-tuning schedules one θ per site; start from a thresholds file without per-neuron scores "
                          "(not `scores` wina or gradient)")
    if getattr(model, "quantization", None):
        raise ConfigError("fine-tuning runs at full precision, this model is fake-quantised (the start thresholds file was "
                          "calibrated at fewer bits?); start from a 16-bit thresholds file, quantise afterwards")


