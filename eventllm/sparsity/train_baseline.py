"""The training-based baseline: thresholds learned by back-propagation with snnTorch surrogate gradients.

In the spirit of "ReLU strikes back" (Mirzadeh et al. 2023) and of the training-based sparsification the
paper compares against: every threshold θ of the model becomes a trainable parameter (θ = softplus(ρ)); the
step |x| > θ is snnTorch's spike function (Heaviside forward, arctan surrogate backward), so the loss reaches
θ. The loss is the language-modelling cross-entropy plus λ · (fraction of projection inputs that pass),
with λ raised while the sparsity is below the target and lowered above it. Training runs on the same
calibration budget as the training-free search (the same windows of local text) until the model-wide
sparsity reaches the target, then `settle_steps` more steps let the loss recover at that sparsity. The model
weights stay frozen; only the θ train.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from eventllm.errors import ConfigError
from eventllm.models.base import CausalLM
from eventllm.sparsity.calibrate import calibration_batch


@dataclass
class TrainedThresholds:
    thetas: dict[tuple[int, str], float]
    sparsity: float  # on the training batch at the end
    loss_dense: float
    loss_final: float
    steps: int
    steps_to_target: int | None
    seconds: float
    seconds_to_target: float | None
    history: list[dict] = field(default_factory=list)


def train_thresholds(model: CausalLM, ids: list[int], target_sparsity: float, *, tokens: int = 2048, context: int = 256,
                     lr: float = 0.05, max_steps: int = 1000, settle_steps: int = 50, batch_windows: int = 8,
                     theta_init: float = 0.01, seed: int = 0, device: str | None = None, progress: bool = True) -> TrainedThresholds:
    """Learn one θ per site until the mean projection-input sparsity reaches `target_sparsity`.

    The model is left with the learned θ set (as plain thresholds, on its original device).
    """
    import snntorch.surrogate as surrogate
    from tqdm import tqdm

    if not 0 < target_sparsity < 1:
        raise ConfigError(f"target sparsity must be between 0 and 1, got {target_sparsity}")
    model.set_scores("magnitude")  # the learned θ is one bound on |x| per site
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    home = next(model.parameters()).device
    torch.manual_seed(seed)
    context = min(context, getattr(model.config, "max_positions", context))
    batch = calibration_batch(ids, tokens, context, seed).to(dev)
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sites = model.threshold_sites()
    spike = surrogate.atan(alpha=2.0)
    rho0 = math.log(math.expm1(theta_init))
    params = []
    for s in sites:
        rho = torch.nn.Parameter(torch.full((), rho0, device=dev))
        s.surrogate = (rho, spike)
        params.append(rho)
    opt = torch.optim.Adam(params, lr=lr)

    def run(windows) -> tuple[torch.Tensor, torch.Tensor]:
        state = model.init_state(windows.shape[0]) if model.recurrent else None
        logits, _ = model(windows[:, :-1], state)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
        density = torch.stack([s.pass_fraction for s in sites]).mean()
        return ce, density

    history, lam = [], 1.0
    t0 = time.perf_counter()
    reached_step = reached_s = None
    step = 0
    try:
        with torch.no_grad():
            loss_dense = float(F.cross_entropy(
                _logits_dense(model, sites, batch).reshape(-1, model.config.vocab_size), batch[:, 1:].reshape(-1)))
        g = torch.Generator().manual_seed(seed)
        bar = tqdm(range(max_steps), desc="training thresholds", disable=not progress)
        for step in bar:
            pick = torch.randperm(batch.shape[0], generator=g)[:batch_windows].to(dev)
            ce, density = run(batch[pick])
            loss = ce + lam * density
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sparsity = 1.0 - float(density.detach())
            lam = lam * 1.05 if sparsity < target_sparsity else lam / 1.05
            history.append({"step": step + 1, "ce": float(ce.detach()), "sparsity": sparsity, "lambda": lam})
            bar.set_postfix(ce=f"{float(ce.detach()):.3f}", sparsity=f"{sparsity:.3f}")
            if reached_step is None and sparsity >= target_sparsity:
                reached_step, reached_s = step + 1, time.perf_counter() - t0
            if reached_step is not None and step + 1 >= reached_step + settle_steps and sparsity >= target_sparsity:
                break
        thetas = {(s.layer, s.projection): float(F.softplus(rho.detach())) for s, rho in zip(sites, params)}
    finally:
        for s in sites:
            s.surrogate = None
            s.pass_fraction = None
        for p in model.parameters():
            p.requires_grad_(True)
    from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport

    def measure(scale: float) -> tuple[float, float]:
        model.set_thetas({k: v * scale for k, v in thetas.items()})
        with torch.no_grad(), SparsityMeter(model) as meter:
            state = model.init_state(batch.shape[0]) if model.recurrent else None
            logits, _ = model(batch[:, :-1], state)
        ce = float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)))
        return SparsityReport.from_meter(model, meter).average(), ce

    # the momentum of the optimiser overshoots the target a little: one common factor on the learned θ brings
    # the sparsity on the training windows back to the target (the allocation across sites is what was learned)
    lo, hi = 0.0, 1.0
    if measure(1.0)[0] >= target_sparsity:
        for _ in range(14):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if measure(mid)[0] < target_sparsity else (lo, mid)
        thetas = {k: v * hi for k, v in thetas.items()}
    sparsity, loss_final = measure(1.0)
    model.to(home)
    return TrainedThresholds(thetas, sparsity, loss_dense, loss_final, step + 1, reached_step, time.perf_counter() - t0,
                             reached_s, history)


def _logits_dense(model: CausalLM, sites, batch: torch.Tensor) -> torch.Tensor:
    """The model's logits with θ = 0 everywhere (the surrogates set aside for one pass)."""
    saved = [s.surrogate for s in sites]
    for s in sites:
        s.surrogate = None
        s.theta = 0.0
    try:
        state = model.init_state(batch.shape[0]) if model.recurrent else None
        return model(batch[:, :-1], state)[0].float()
    finally:
        for s, sur in zip(sites, saved):
            s.surrogate = sur
