"""Event masks from the torch model, for the trace engine (`sim.trace.TraceEngine`).

The model runs in sequence mode (any device, any chunk of tokens; RWKV carries its recurrent state and OPT its
key/value cache from chunk to chunk) while an observer on every threshold site records which entries are
non-zero: the threshold's output (its events) and its input (the events of the process that feeds it — the
token-shift mix, the squared ReLU, the gate, a layer norm, attention). Those are the out-ports whose events
depend on the data; the embedding's out-port the trace engine looks up itself, and every other process of the
graph (dense projections, layer norms, residual adds …) sends all of its entries.

>>> engine = TraceEngine(graph, mapping, load_costs("seneca"))                    # doctest: +SKIP
>>> run_trace(engine, model, ids)          # chunk after chunk: memory bounded by the chunk, not the text
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from eventllm.errors import GraphError
from eventllm.models.base import CausalLM
from eventllm.process.graph import ProcessGraph
from eventllm.models.threshold import ActivationThreshold, SiteObserver


def site_key(graph: ProcessGraph, p) -> tuple[int, str]:
    """The model's (layer, projection) of a threshold process (the head's site is layer n_layer, as in the model)."""
    proj = p.attrs["projection"]
    return (graph.meta.get("n_layer", 0), proj) if proj == "head" else (p.layer, proj)


def site_ports(graph: ProcessGraph) -> dict[tuple[int, str], tuple[str, str]]:
    """(layer, projection) of each threshold site → (the threshold's out-port, the out-port feeding it)."""
    out = {}
    for p in graph:
        if p.kind == "threshold":
            out[site_key(graph, p)] = (f"{p.name}.out", p.in_ports["inp"].sources[0].src.path)
    return out


def graph_thetas(graph: ProcessGraph) -> dict[tuple[int, str], float]:
    """The θ of every threshold process of the graph, keyed as the model's sites."""
    return {site_key(graph, p): p.theta for p in graph if p.kind == "threshold"}


def check_thresholds_match(model: CausalLM, graph: ProcessGraph) -> None:
    """Raise unless the model's per-neuron thresholds (θ / ‖W[:, i]‖) are the graph's θ vectors, bit for bit: its
    masks would be another model's (norms of other weights) without a word."""
    vectors = model.theta_vectors()
    for p in graph:
        if p.kind != "threshold" or p.vars["theta"].value.ndim == 0:
            continue
        got = vectors.get(site_key(graph, p))
        if got is None or not np.array_equal(got, p.vars["theta"].value):
            raise GraphError(f"{p.name}: the model's per-neuron thresholds differ from the graph's; pass the model the graph "
                             "was built from, at the graph's precision")


def check_model_matches(model: CausalLM, graph: ProcessGraph) -> None:
    """Raise unless `model` is the model `graph` was built from (same fingerprint), so its masks fit the graph."""
    want = graph.meta.get("fingerprint")
    if want is not None and model.fingerprint() != want:
        raise GraphError(f"the model (fingerprint {model.fingerprint()}) is not the one the graph was built from ({want}); "
                         "pass the graph's model with `model`")
    sites = {(s.layer, s.projection) for s in model.threshold_sites()}
    if sites != set(site_ports(graph)):
        raise GraphError(f"the model has {len(sites)} threshold sites, the graph {len(site_ports(graph))}; "
                         "pass the model the graph was built from")


class MaskRecorder(SiteObserver):
    """While attached, records the non-zero masks [T, n] of every threshold site's input and output (batch 1)."""

    def __init__(self, model: CausalLM, graph: ProcessGraph):
        self.model = model
        self.ports = site_ports(graph)
        self.masks: dict[str, torch.Tensor] = {}

    def _observe(self, site: ActivationThreshold, x: torch.Tensor, y: torch.Tensor) -> None:
        out_port, in_port = self.ports[(site.layer, site.projection)]
        # [1, T, n], or [T, n] where the model flattens batch and time (OPT's feed-forward)
        self.masks[out_port] = (y != 0).reshape(-1, y.shape[-1])
        self.masks[in_port] = (x != 0).reshape(-1, x.shape[-1])

    def take(self) -> dict[str, np.ndarray]:
        """The masks of the last forward pass, as numpy (moved off the device in one go per port)."""
        out = {k: v.cpu().numpy() for k, v in self.masks.items()}
        self.masks = {}
        return out


@torch.no_grad()
def event_masks(model: CausalLM, graph: ProcessGraph, ids, chunk: int = 256) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(tokens, masks) for each chunk of `ids`, the model run in sequence mode from a fresh state."""
    model.eval()
    device = next(model.parameters()).device
    ids = np.asarray(ids, dtype=np.int64).ravel()
    state = model.init_state()
    with MaskRecorder(model, graph) as rec:
        for s in range(0, len(ids), chunk):
            part = ids[s : s + chunk]
            _, state = model(torch.as_tensor(part, device=device)[None], state)
            yield part, rec.take()


def run_trace(engine, model: CausalLM, ids, chunk: int = 256, progress: bool = False, desc: str = "trace") -> None:
    """Count the sequence `ids` on `engine` (a `sim.trace.TraceEngine` of the model's graph) from a fresh state."""
    from tqdm import tqdm

    engine.new_sequence()
    with tqdm(total=len(ids), desc=desc, unit="tok", disable=not progress, leave=False) as bar:
        for part, masks in event_masks(model, engine.graph, ids, chunk):
            engine.add(part, masks)
            bar.update(len(part))
