"""Sparsity-aware fine-tuning: the weights and the thresholds trained together, distilled from the dense model (issue
13 item 5; ProSparse-like). The training-based comparator of the paper's training-free search.

    eventllm calibrate --method finetune --model zoo:rwkv4-small --data ../shared/data/pg-books \\
        --target-sparsity 0.7 --max-ppl-increase 0.01 --max-seconds 240 -o thr.json --output-model ft.safetensors

- Teacher: a frozen copy of the model as it is given, dense (θ = 0 at every site). Student: the model itself, every
  weight trainable, a threshold at every site.
- The threshold in training is the one evaluation runs (`ActivationThreshold`, nothing swapped in): the forward is
  exactly T_θ(x) = x·[|x| > θ], so the model trained is the model measured. Its gradient with respect to x is the
  mask [|x| > θ] (straight-through for the inputs that pass; the exact gradient everywhere but on the step itself).
  θ gets no gradient: it is scheduled. (The snnTorch baseline, `train_baseline`, learns θ through a surrogate
  against a sparsity penalty; the sparsity then follows the penalty's weight, where a schedule reaches a given
  MAC-weighted sparsity by construction.)
- Loss: KL(teacher ‖ student) per token on the logits, temperature 1, plus `ce_weight` × the cross-entropy on the text
  (default 0: the quality bound is relative to the dense model, so its predictions are the target; the data term
  only pulls towards the training text, which the zoo models have already seen several times).
- The schedule sets each site's density (the share of its inputs that pass), not θ. The MAC-weighted sparsity level
  S rises from the start's S0 to the goal along the cubic of gradual pruning (Zhu & Gupta 2017: fast while there is
  slack, slowly near the goal; linear when only a perplexity bound is given) over the first `ramp` share of the
  budget (steps or seconds, whichever ends first). Every site's density shrinks by one common factor,
  d_i = d_i(0)·(1 − S)/(1 − S0), so the MAC-weighted density is exactly 1 − S (each site weighted by the in × out of
  the projection it feeds) and the allocation across sites is the start's: the zoo models' shipped θ carry the
  training-free search's, which put the sparsity where the loss allowed it; from θ = 0 every site other than the
  naturally sparse ones gets the same density. θ_i follows the quantile of |x_i| at 1 − d_i, estimated every step
  on a sample of the site's inputs in the batch and smoothed (EMA). Densities rather than one factor on θ, because
  (1) a site that starts at θ = 0 (every site, from zero; those the search left dense) gets sparser too, and (2)
  fine-tuning moves the activations' magnitudes: at a fixed θ the student could escape the threshold by growing its
  activations, a quantile holds the site's sparsity wherever they go.
- Recovery: after the ramp the densities stay at the goal while training goes on (θ still tracking them); over the
  last `freeze` share of the budget θ is fixed, so the final weights were trained at their final θ. The learning rate
  (AdamW, no weight decay, linear warm-up) is constant through the ramp and decays (cosine, to a tenth) over the
  recovery. 1e-4 by default: in short CPU runs of zoo:rwkv4-tiny held at its start sparsity (20–40 steps of 0.5k–2k
  tokens), the weight updates alone cost +1.4–2.5% perplexity on the check stream at 3e-4, +0.4–0.7% at 1e-4 (2k-token
  batches) and +0.4% at 3e-5, against ±0.0% for θ tracking alone (lr ≈ 0); the GPU's larger batches are quieter.
- Weight averaging (`weight_average`, `--weight-average 0.995`; off by default): the checks measure, and the run
  keeps, an exponential moving average of the weights (Polyak averaging) rather than the last iterate. In zoo:rwkv4-small
  runs at lr 3e-4 with `ce_weight` 1 the iterate's noise alone put the check stream 1.6–2.0% above the dense model at
  its natural sparsity (θ ≈ 0), which held the ramp for a third of the budget. The average is quieter:
  `benchmarks/weight_average.py` (zoo:rwkv4-tiny on the CPU, lr 3e-4, decay 0.95) measured a mean check increase of
  +1.05% against the iterate's +3.28%, both at the same held sparsity. On one H200 (zoo:rwkv4-small from θ = 0, lr 3e-4,
  decay 0.995, 470 s) the level rose without a hold to 55% and ended at 64.6% MAC-weighted at +0.08% on the check
  stream, where the run without it (GPU shared by three) had ended at 57.3% (docs/RESULTS.md §1).
- The bound: every `check_every` steps the student runs the held-out check stream as `eventllm evaluate` runs text
  (one stream, the state carried, float32), its perplexity compared with the teacher's on the same tokens. Above
  `safety` × `max_ppl_increase` the ramp holds (the level stops rising while training recovers); on a second failure
  in a row it backs off to the level of the last check within the bound. Each check above the bound also halves the
  pace of the ramp's clock (to an eighth at least), each one within it gives back a quarter (up to 1): near where the
  bound binds the level then rises in small steps that training can follow, where the full pace rose 2.4–6.5 points of
  MAC-weighted sparsity between two checks on zoo:rwkv4-small and saw-toothed between hold and back-off (session 27,
  docs/runs/h200_s27/ft.json). The same one-run command then ended at 68.7% at −0.17% on the check stream instead of
  67.0% at +0.52% (one H200, 520 s, docs/runs/h200_s28/ft1.json). The weights and θ of the checks within the
  bound are kept (the best so far), and the end state is the best of the final state and those: it is within the bound
  on the check stream (the start itself, checked at step 0, is the fallback, so this holds unless the start is above
  the bound too; a final state above the bound is also offered with its θ scaled down, bisected). The gap between the sparsity on the training windows (train split, fresh
  state) and on the check stream is measured at every check and added to the goal, so the target is met on the check
  stream.
- `seconds_to_target`: wall time from the call to the first check at which the check stream had the target
  sparsity within the bound: the figure to set beside the training-free search's `seconds`, same GPU, same check
  stream. The ramp is spread over the budget, so the time to the target follows the budget given: for the comparison,
  start from θ = 0 and give the smallest budget that still reaches the target within the bound.

- Pause and resume (`checkpoint`, `pause_after_seconds`; `--checkpoint RUN.pt --pause-after S`): the whole run state
  (weights, θ, AdamW, the weight average, the kept snapshot, the ramp's clock and pace, the history, every random
  generator) is saved when the call has run S seconds, and the same call again goes on from it; a `max_seconds`
  budget counts the run's own time over its calls. A run can then be longer than one command may last on a lent
  machine (600 s): one run's result grows with its budget (docs/RESULTS.md §1: 68.7–70.4% at 500–550 s), and a
  second stage from a written model starts a new ramp and optimiser.

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
import torch.nn.functional as F

from eventllm.atomic import atomic_path
from eventllm.errors import ConfigError, DataError
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.models.base import CausalLM
from eventllm.models.device import torch_device
from eventllm.models.threshold import ActivationThreshold, SiteObserver
from eventllm.sparsity.calibrate import _bisect, check_stream

# the level the ramp heads for when only a perplexity bound is given (the bound stops it earlier)
MAX_LEVEL = 0.98
# the goal on the training windows sits this far above the target, so that the check stream lands on it
MARGIN = 0.003
# a check "reached the target" at this far below it (sampling noise of the per-site quantiles)
REACHED_TOLERANCE = 0.001
# the pace of the ramp's clock: × PACE_DOWN after each check above the bound (not below MIN_PACE), × PACE_UP after each
# one within it (not above 1)
PACE_DOWN, PACE_UP, MIN_PACE = 0.5, 1.25, 0.125
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "eventllm-finetune-checkpoint", 1


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
        raise ConfigError(f"--device {device}: fine-tuning runs on cuda or cpu")
    return dev


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
        raise DataError("the loss on the check stream is NaN or infinite; lower --lr")
    return nll, SparsityReport.from_meter(model, meter)


def _report(model: CausalLM, zero_fractions: dict) -> SparsityReport:
    return SparsityReport(tuple(model.PROJECTIONS), model.site_shapes(), model.n_layer, dict(zero_fractions))


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


def finetune(model: CausalLM, train_ids, check_ids, *, target_sparsity: float | None = None,
             max_ppl_increase: float | None = None, steps: int | None = None, max_seconds: float | None = None,
             lr: float = 1e-4, warmup: int = 100, batch_size: int = 16, context: int = 512, ramp: float = 0.7,
             freeze: float = 0.1, check_every: int = 100, check_tokens: int = 32768, safety: float = 0.9,
             ce_weight: float = 0.0, grad_clip: float = 1.0, sample: int = 16384, ema: float = 0.3, seed: int = 0,
             weight_average: float = 0.0, device: str | None = None, teacher: CausalLM | None = None,
             progress: bool = True, checkpoint: str | Path | None = None, pause_after_seconds: float | None = None,
             pause_after_steps: int | None = None, raise_end: bool = True) -> FinetuneResult:
    """Fine-tune `model` (weights and θ, see the module docstring) on windows of `train_ids` until the MAC-weighted
    sparsity reaches `target_sparsity`, keeping the perplexity on the check stream (`check_tokens` of `check_ids`)
    within `max_ppl_increase` of the dense model's; either goal alone works too. The model's θ when called are the
    start (0: from the natural zeros). The budget: `steps` optimiser steps or `max_seconds` (from the call), whichever
    ends first (2000 steps when neither is given). The model is left with the end state's weights and θ, in eval mode,
    on the device it came on.

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
    _check_request(model, target_sparsity, max_ppl_increase, steps, max_seconds, lr, batch_size, context, check_every,
                   ce_weight, safety, ramp, freeze, weight_average)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    if (pause_after_seconds is not None or pause_after_steps is not None) and checkpoint is None:
        raise ConfigError("pausing saves the run to a checkpoint: give --checkpoint PATH with --pause-after")
    if pause_after_seconds is not None and not pause_after_seconds > 0:
        raise ConfigError(f"--pause-after = {pause_after_seconds!r}: give a number of seconds > 0")
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    given_fingerprint = model.fingerprint()
    if steps is None and max_seconds is None:
        steps = 2000
    context = min(context, getattr(model.config, "max_positions", context))  # fixed-context models: within their positions
    stream = torch.from_numpy(np.asarray(train_ids).astype(np.int64, copy=False)).flatten()
    if stream.numel() < context + 2:
        raise DataError(f"fine-tuning needs more than {context + 1} tokens of training text, got {stream.numel()}; pass more "
                        "text or a smaller --context")
    check = check_stream(check_ids, check_tokens, seed)
    if check.numel() < 2:
        raise DataError("the check stream has fewer than 2 tokens; pass more text")
    warmup = max(1, min(warmup, (steps or 10 * warmup) // 10))  # at most a tenth of a step budget
    settings = {"target_sparsity": target_sparsity, "max_ppl_increase": max_ppl_increase, "steps": steps,
                "max_seconds": max_seconds, "lr": lr, "warmup": warmup, "batch_size": batch_size, "context": context,
                "ramp": ramp, "freeze": freeze, "check_every": check_every, "check_tokens": check_tokens, "safety": safety,
                "ce_weight": ce_weight, "grad_clip": grad_clip, "sample": sample, "ema": ema, "seed": seed,
                "weight_average": weight_average, "raise_end": raise_end, "autocast": "bf16" if dev.type == "cuda" else None}

    home = next(model.parameters()).device
    model.to(dev)
    stream = stream.to(dev)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else contextlib.nullcontext
    sites = model.threshold_sites()
    own_teacher = teacher is None
    if own_teacher:
        teacher = copy.deepcopy(model)
        teacher.set_thetas(0.0)
        for p in teacher.parameters():
            p.requires_grad_(False)
        start_weights = teacher.state_dict()  # the model as given (the fallback end state)
    else:
        start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    teacher_home = next(teacher.parameters()).device
    teacher.to(dev).eval()
    model.set_dropout(0.0)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    tracker = SiteTracker(model, sample, torch.Generator(device=dev).manual_seed(seed))
    probe = _windows(stream, max(2 * batch_size, 8), context, rng)  # fixed training windows, measured at every check
    # what a checkpoint must have been written by: the model as given, the teacher, the texts (length and a sample)
    origin = {"model": given_fingerprint, "teacher": None if own_teacher else teacher.fingerprint(),
              "train": _stream_print(stream), "check": _stream_print(check)}
    before = 0.0  # the run's time in earlier calls (a resumed run)

    def elapsed() -> float:
        return before + time.perf_counter() - t0

    def probe_density() -> dict:
        tracker.quantiles = {}  # densities only (each step sets its own targets)
        with torch.no_grad(), amp(), tracker:
            for i in range(0, probe.shape[0], batch_size):
                model(probe[i : i + batch_size, :-1])
        return tracker.read()[0]

    def train_mac(density: dict) -> float:
        return _report(model, {k: 1.0 - d for k, d in density.items()}).mac_skipped()

    try:
        # no weight decay: it would pull the weights away from the teacher's, where they are meant to stay near
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
        average = WeightAverage(model, weight_average) if weight_average else None
        measured = average.swapped if average else contextlib.nullcontext  # the weights the checks measure

        def budget_used(step: int) -> float:
            used = step / steps if steps else 0.0
            return max(used, elapsed() / max_seconds) if max_seconds else used

        def allowed(nll: float) -> bool:  # loss_dense: measured below, or read from the checkpoint
            return max_ppl_increase is None or math.exp(nll - loss_dense) - 1.0 <= safety * max_ppl_increase

        saved = _read_checkpoint(checkpoint, settings, origin, dev) if checkpoint is not None and checkpoint.exists() else None
        if saved is None:
            loss_dense, natural = _check(teacher, check)
            d0 = probe_density()
            plan = Schedule(d0, min(train_mac(d0), 1.0 - 1e-6), target_sparsity, ramp, freeze, lr, warmup)
            nll0, rep0 = last_check = _check(model, check)
            history = [{"step": 0, "seconds": elapsed(), "check": True, "level": plan.s0,
                        "check_mac_weighted": rep0.mac_skipped(), "ppl_increase": math.exp(nll0 - loss_dense) - 1.0,
                        "ok": allowed(nll0),
                        "theta_mean": float(np.mean([s.theta for s in sites]))}]
            # states within the bound: the start, and the best checked one since (one copy of the weights)
            kept = [_State(0, nll0, rep0, "start", model.get_thetas())] if history[0]["ok"] else []
            offset = float(np.clip(plan.s0 - rep0.mac_skipped(), -0.05, 0.05))  # training windows minus check stream, same θ
            ramp_clock, p_prev = 0.0, budget_used(0)  # the ramp's clock stands still while the bound is exceeded
            pace = 1.0  # and runs slower after it was: the level then rises in smaller steps near where the bound binds
            held, fails, last_ok_clock = False, 0, 0.0
            recent: list[float] = []
            reached_s = reached_step = None
            step = tokens = 0
        else:  # go on from the checkpoint: every piece of run state as it was when the run paused
            model.load_state_dict(saved["weights"])
            model.set_thetas(saved["thetas"])
            opt.load_state_dict(saved["optimizer"])
            if average:
                with torch.no_grad():
                    for a, b in zip(average.avg, saved["average"]):
                        a.copy_(b)
            rng.bit_generator.state = saved["rng"]
            torch.set_rng_state(saved["torch_rng"].cpu())  # generator states are CPU byte tensors (map_location moved them)
            tracker.generator.set_state(saved["tracker_rng"].cpu())
            loss_dense, natural, nll0, rep0, last_check = (saved[k] for k in ("loss_dense", "natural", "nll0", "rep0", "last_check"))
            plan = Schedule(saved["d0"], saved["s0"], target_sparsity, ramp, freeze, lr, warmup)
            history, kept = saved["history"], saved["kept"]
            (offset, ramp_clock, p_prev, pace, held, fails, last_ok_clock, recent, reached_s, reached_step, step,
             tokens) = (saved["run"][k] for k in _RUN_STATE)
            before, t0 = saved["elapsed"], time.perf_counter()
            if progress:
                print(f"resuming from {checkpoint}: step {step}, {before:.1f} s of the run so far")

        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, desc="fine-tuning", disable=not progress, unit="step")
        while (p := budget_used(step)) < 1.0:
            ramp_clock += 0.0 if held else pace * (p - p_prev)
            p_prev = p
            level = plan.level(ramp_clock, offset)
            tracker.quantiles = {} if plan.frozen(p) else plan.site_targets(level)
            for g in opt.param_groups:
                g["lr"] = plan.rate(step, p)
            x = _windows(stream, batch_size, context, rng)
            with torch.no_grad(), amp():
                t_logits = teacher(x[:, :-1])[0]
            with amp(), tracker:
                s_logits = model(x[:, :-1])[0]
            loss, kl, ce = distillation_loss(s_logits, t_logits, x[:, 1:], ce_weight)
            del t_logits, s_logits
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            if average:
                average.update()
            density, estimate = tracker.read()
            for s in sites:  # θ follows the quantile at the site's target (smoothed)
                if (key := (s.layer, s.projection)) in estimate:
                    s.theta = float(s.theta + ema * (estimate[key] - s.theta))
            recent = (recent + [train_mac(density)])[-10:]
            step += 1
            tokens += batch_size * context
            entry = {"step": step, "seconds": elapsed(), "level": level, "train_mac_weighted": recent[-1],
                     "kl": float(kl.detach()), "ce": float(ce.detach()), "lr": opt.param_groups[0]["lr"]}
            bar.update(1)
            bar.set_postfix(kl=f"{entry['kl']:.4f}", level=f"{level:.3f}", sparsity=f"{recent[-1]:.3f}")
            if step % check_every == 0:
                with measured():
                    nll, rep = last_check = _check(model, check)
                    ok, mac, inc = allowed(nll), rep.mac_skipped(), math.exp(nll - loss_dense) - 1.0
                    if target_sparsity is not None:  # the gap between training windows and check stream at the same θ
                        offset = float(np.clip(0.5 * offset + 0.5 * (train_mac(probe_density()) - mac), -0.05, 0.05))
                    if ok:
                        _keep(kept, _State(step, nll, rep, "snapshot", model.get_thetas(),
                                           {k: v.detach().clone() for k, v in model.state_dict().items()}), target_sparsity)
                if ok:
                    held, fails, last_ok_clock = False, 0, ramp_clock
                    pace = min(1.0, pace * PACE_UP)
                    if reached_s is None and _reaches(rep, target_sparsity):
                        reached_s, reached_step = elapsed(), step
                else:  # hold the level; a second failure in a row: back to the level of the last check within the bound
                    held, fails = True, fails + 1
                    pace = max(MIN_PACE, pace * PACE_DOWN)
                    if fails >= 2:
                        ramp_clock = min(ramp_clock, last_ok_clock)
                entry |= {"check": True, "check_mac_weighted": mac, "check_sparsity": rep.average(), "ppl_increase": inc,
                          "ok": ok, "held": held, "pace": pace, "offset": offset, "theta_mean": float(np.mean([s.theta for s in sites]))}
                if progress:
                    bar.write(f"step {step}: check ppl {100 * inc:+.2f}% vs dense, sparsity MAC-weighted {100 * mac:.1f}% "
                              f"(the level on training windows {100 * level:.1f}%)"
                              + ("" if ok else "; above the bound: holding"))
            history.append(entry)
            if ((pause_after_steps is not None and step >= pause_after_steps or pause_after_seconds is not None
                 and time.perf_counter() - t0 >= pause_after_seconds) and budget_used(step) < 1.0):
                bar.close()
                run = dict(zip(_RUN_STATE, (offset, ramp_clock, p_prev, pace, held, fails, last_ok_clock, recent, reached_s,
                                            reached_step, step, tokens)))
                _write_checkpoint(checkpoint, {
                    "settings": settings, "origin": origin, "elapsed": elapsed(), "run": run,
                    "weights": model.state_dict(), "thetas": model.get_thetas(), "optimizer": opt.state_dict(),
                    "average": average.avg if average else None, "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "tracker_rng": tracker.generator.get_state(),
                    "loss_dense": loss_dense, "natural": natural, "nll0": nll0, "rep0": rep0, "last_check": last_check,
                    "d0": plan.d0, "s0": plan.s0, "history": history, "kept": kept})
                raise FinetunePaused(step, elapsed(), checkpoint)
        bar.close()
        if average:  # the run's result is the averaged weights, the ones every check measured (a last check too)
            average.load()
        if not history[-1].get("check"):
            last_check = _check(model, check)
            history[-1] |= {"check": True, "check_mac_weighted": last_check[1].mac_skipped(),
                            "check_sparsity": last_check[1].average(),
                            "ppl_increase": math.exp(last_check[0] - loss_dense) - 1.0, "ok": allowed(last_check[0])}
            if progress:
                h = history[-1]
                tqdm.write(f"step {step} (the last): check ppl {100 * h['ppl_increase']:+.2f}% vs dense, sparsity MAC-weighted "
                           f"{100 * h['check_mac_weighted']:.1f}%" + ("" if h["ok"] else "; above the bound"))
        chosen = _end_state(model, check, _State(step, *last_check, "final", model.get_thetas()), kept, allowed,
                            target_sparsity, max_ppl_increase is not None)
        if chosen.source == "snapshot":
            model.load_state_dict(chosen.weights)
        elif chosen.source == "start":
            model.load_state_dict(start_weights)
        model.set_thetas(chosen.thetas)
        if raise_end and max_ppl_increase is not None and allowed(chosen.nll) and not _reaches(chosen.report, target_sparsity):
            chosen = _raised(model, check, chosen, allowed)
            if progress and chosen.scale > 1:
                tqdm.write(f"the end state's θ raised × {chosen.scale:.3f} within the bound: check ppl "
                           f"{100 * (math.exp(chosen.nll - loss_dense) - 1.0):+.2f}% vs dense, sparsity MAC-weighted "
                           f"{100 * chosen.report.mac_skipped():.1f}%")
    finally:
        tracker.quantiles = {}
        model.eval()
        model.to(home)
        if not own_teacher:
            teacher.to(teacher_home)
    return FinetuneResult(
        thetas=model.get_thetas(), loss_dense=loss_dense, loss_final=chosen.nll, mac_weighted=chosen.report.mac_skipped(),
        sparsity=chosen.report.average(), natural_mac_weighted=natural.mac_skipped(), natural_sparsity=natural.average(),
        start_mac_weighted=rep0.mac_skipped(), train_mac_weighted=float(np.mean(recent)) if recent else plan.s0,
        within_bound=None if max_ppl_increase is None else allowed(chosen.nll), steps=step, tokens=tokens,
        seconds=elapsed(), seconds_to_target=reached_s, steps_to_target=reached_step, kept_step=chosen.step,
        end_scale=chosen.scale, check_tokens=int(check.numel() - 1),
        device="cpu" if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        settings=settings, history=history,
    )


# the run's scalars a checkpoint carries, in this order
_RUN_STATE = ("offset", "ramp_clock", "p_prev", "pace", "held", "fails", "last_ok_clock", "recent", "reached_s", "reached_step",
              "step", "tokens")


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
        raise DataError(f"--checkpoint {path}: not a readable fine-tuning checkpoint ({type(e).__name__}); delete it to start "
                        "afresh, or give the checkpoint of this run") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"--checkpoint {path}: not a fine-tuning checkpoint of eventllm; delete it or give another path")
    if saved.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"--checkpoint {path}: version {saved.get('version')} of the checkpoint format, this eventllm reads "
                        f"{CHECKPOINT_VERSION}; delete it to start afresh")
    what = {"model": "another --model (as given, before fine-tuning)", "teacher": "another --teacher",
            "train": "another training text (--data)", "check": "another check stream (--data, --split, --check-tokens, --seed)"}
    for key, text in what.items():
        if saved["origin"].get(key) != origin[key]:
            raise ConfigError(f"--checkpoint {path} is of a run with {text}; give the same options as when it started, "
                              "or delete it to start afresh")
    for key, value in settings.items():
        if saved["settings"].get(key) != value:
            raise ConfigError(f"--checkpoint {path} is of a run with {key} = {saved['settings'].get(key)!r}, this call has "
                              f"{value!r}; give the same options as when it started, or delete it to start afresh")
    return saved


def _check_request(model, target_sparsity, max_ppl_increase, steps, max_seconds, lr, batch_size, context, check_every,
                   ce_weight, safety, ramp, freeze, weight_average=0.0) -> None:
    if target_sparsity is None and max_ppl_increase is None:
        raise ConfigError("fine-tuning needs a goal: a target sparsity (--target-sparsity), a perplexity bound "
                          "(--max-ppl-increase), or both")
    if target_sparsity is not None and not 0 < target_sparsity < 1:
        raise ConfigError(f"--target-sparsity must be between 0 and 1 (MAC-weighted), got {target_sparsity}")
    if max_ppl_increase is not None and not 0 < max_ppl_increase < 10:
        raise ConfigError(f"--max-ppl-increase must be a fraction such as 0.01 (1%), got {max_ppl_increase}")
    for name, value, ok, want in (("--steps", steps, steps is None or steps >= 1, "an integer ≥ 1"),
                                  ("--max-seconds", max_seconds, max_seconds is None or max_seconds > 0, "a number > 0"),
                                  ("--lr", lr, 0 < lr < 1, "a learning rate in (0, 1), e.g. 3e-4"),
                                  ("--batch-size", batch_size, batch_size >= 1, "an integer ≥ 1"),
                                  ("--context", context, context >= 2, "an integer ≥ 2"),
                                  ("--check-every", check_every, check_every >= 1, "an integer ≥ 1"),
                                  ("--ce-weight", ce_weight, ce_weight >= 0, "a weight ≥ 0"),
                                  ("--weight-average", weight_average, 0 <= weight_average < 1,
                                   "a decay per step in [0, 1), e.g. 0.995 (0: off)"),
                                  ("--safety", safety, 0 < safety <= 1, "a share in (0, 1]"),
                                  ("ramp", ramp, 0 < ramp <= 1, "a share of the budget in (0, 1]"),
                                  ("freeze", freeze, 0 <= freeze <= 1 - ramp, "a share of the budget in [0, 1 - ramp]")):
        if not ok:
            raise ConfigError(f"{name} = {value!r}: give {want}")
    if model.scores != "magnitude":
        raise ConfigError("fine-tuning schedules one θ per site; start from a thresholds file without per-neuron scores "
                          "(not --scores wina or gradient)")
    if getattr(model, "quantization", None):
        raise ConfigError("fine-tuning runs at full precision, this model is fake-quantised (the start thresholds file was "
                          "calibrated at fewer bits?); start from a 16-bit thresholds file, quantise afterwards")


class WeightAverage:
    """An exponential moving average of a model's trainable weights (Polyak averaging): after each optimiser step
    avg ← decay·avg + (1 − decay)·w, starting from the weights as given. The average of a run at a high learning rate
    lies nearer the minimum than the iterate, whose noise alone moves the perplexity by 1–2% in zoo:rwkv4-small
    fine-tuning runs at 3e-4 (docs/RESULTS.md): the checks measure, and the run keeps, the average."""

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
