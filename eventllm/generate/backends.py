"""Where the tokens of a generation session are computed: the torch model, the event-driven simulator, or lava-nc.

Both give `step(token) -> logits` over a carried state plus per-token statistics; the simulator backend
also runs a dense shadow (θ = 0, no zero skipping) on the same tokens so the session can show what the
sparsity saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eventllm.models.base import CausalLM
from eventllm.evaluate.sparsity_stats import SparsityMeter


@dataclass
class TokenStats:
    sparsity: float  # mean zero fraction over the projection inputs
    energy_j: float | None = None  # simulated, per token
    latency_s: float | None = None
    dense_energy_j: float | None = None
    dense_latency_s: float | None = None


class TorchBackend:
    """The torch model in step mode; sparsity from the threshold sites."""

    name = "torch"

    def __init__(self, model: CausalLM):
        self.model = model.eval()
        self.reset()

    def reset(self) -> None:
        self.state = self.model.init_state(1)

    def step(self, token: int) -> tuple[torch.Tensor, TokenStats]:
        with SparsityMeter(self.model) as meter:
            logits, self.state = self.model.step(token, self.state)
        fr = meter.zero_fraction()
        return logits.float(), TokenStats(float(np.mean(list(fr.values()))) if fr else 0.0)


class SimBackend:
    """The model's event-driven graph, mapped onto a topology and simulated token by token."""

    name = "sim"

    def __init__(self, model: CausalLM, topology: str = "seneca", costs: str | None = None, model_name: str | None = None):
        from eventllm.pipeline import prepare, simulator

        hw = prepare(model, model_name, topology, costs)
        self.graph, self.mapping, self.costs = hw.graph, hw.mapping, hw.costs
        self.sim = simulator(hw)
        # the dense shadow: the same tokens through the dense 16-bit baseline (θ = 0, every entry processed: its counts
        # do not depend on the values), as `eventllm simulate --compare-dense` and the demo compare against
        self.dense = simulator(hw, dense=True)

    def reset(self) -> None:
        self.sim.reset()
        self.dense.reset()

    def step(self, token: int) -> tuple[torch.Tensor, TokenStats]:
        logits = self.sim.step(token)
        self.dense.step(token)
        r, d = self.sim.result, self.dense.result
        stats = TokenStats(r.sparsity_per_token[-1], r.energy_per_token[-1], r.latency_per_token[-1],
                           d.energy_per_token[-1], d.latency_per_token[-1])
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)), stats


class LavaBackend:
    """The model's event-driven graph running on lava-nc (Loihi2SimCfg) in the Python 3.10 environment, token by
    token (`eventllm.process.lava.client`); sparsity from the Lava processes' own event counters."""

    name = "lava"

    def __init__(self, model: CausalLM, model_name: str | None = None, blocks: str = "hierarchical"):
        from eventllm.pipeline import build
        from eventllm.process.lava.client import LavaClient

        self.graph = build(model, model_name)
        self.client = LavaClient(self.graph, blocks)

    def reset(self) -> None:
        self.client.reset()

    def step(self, token: int) -> tuple[torch.Tensor, TokenStats]:
        logits, sparsity = self.client.step_with_sparsity(token)
        return torch.from_numpy(logits.astype(np.float32)), TokenStats(sparsity or 0.0)

    def close(self) -> None:
        self.client.close()


BACKENDS = ("sim", "torch", "lava")


def make_backend(kind: str, model: CausalLM, topology: str = "seneca", costs: str | None = None, model_name: str | None = None,
                 lava_blocks: str = "hierarchical"):
    from eventllm.errors import ConfigError

    if kind == "torch":
        return TorchBackend(model)
    if kind == "sim":
        return SimBackend(model, topology, costs, model_name)
    if kind == "lava":
        return LavaBackend(model, model_name, lava_blocks)
    raise ConfigError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
