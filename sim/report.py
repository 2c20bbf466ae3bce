"""Turning simulator counts into the figures people read: per-token energy and latency, by layer and by kind,
dense vs natural vs thresholded side by side, JSON and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventllm.process.graph import ProcessGraph
from mapping.result import Mapping
from sim.costs import CostModel
from sim.engine import COUNTERS, ENERGY_GROUPS, Simulator

MODES = {
    "thresholded": "calibrated θ, zeros skipped (event-driven)",
    "natural": "θ = 0, natural zeros skipped (event-driven)",
    "dense": "θ = 0, every entry processed and sent (no zero skipping)",
}


# the natural and dense runs: every threshold's θ taken as 0
MODE_OVERRIDES = {"theta": 0.0}


def unit_energies(costs: CostModel) -> np.ndarray:
    """Joules per count of each counter (a packet: the cost table's `packet`, 0 where only its hops cost)."""
    per = dict.fromkeys(COUNTERS, 0.0)
    for pairs in ENERGY_GROUPS.values():
        for counter, key in pairs:
            per[counter] = costs.energy[key]
    return np.array([per[c] for c in COUNTERS])


def summarize(sim: Simulator) -> dict:
    """The figures of one simulated run (all per token, averaged over the run's tokens)."""
    r = sim.result
    n = max(1, r.tokens)
    per_shard = r.counts / n
    shard_energy = per_shard @ unit_energies(sim.costs)
    latency = float(np.mean(r.latency_per_token))
    breakdown = sim.energy_breakdown(per_shard.sum(0), latency)
    groups = sim.group_of_shard
    layer_energy = np.bincount(groups, shard_energy, len(sim.layer_names))
    macs = per_shard[:, COUNTERS.index("synops")] + per_shard[:, COUNTERS.index("synops_int8")]  # FP16 and int8 MACs
    layer_synops = np.bincount(groups, macs, len(sim.layer_names))
    finish = np.array(r.layer_finish)
    layer_latency = np.diff(np.concatenate([np.zeros((len(finish), 1)), finish], axis=1), axis=1).mean(0)
    kinds: dict[str, float] = {}
    for s, e in zip(sim.mapping.shards, shard_energy):
        kinds[s.kind] = kinds.get(s.kind, 0.0) + float(e)
    core_energy = np.bincount(sim.core, shard_energy, sim.topo.n_cores)
    by_process: dict[str, dict[str, float]] = {}
    for s, row in zip(sim.mapping.shards, per_shard):
        entry = by_process.setdefault(s.process, dict.fromkeys(COUNTERS, 0.0))
        for c, v in zip(COUNTERS, row):
            entry[c] += float(v)
    loads = sim.link_loads()
    used = np.unique(sim.core)
    return {
        "tokens": r.tokens,
        "energy_per_token_j": float(np.mean(r.energy_per_token)),
        "latency_per_token_s": latency,
        "activation_sparsity": float(np.mean(r.sparsity_per_token)),
        "synaptic_ops_per_token": float(macs.sum()),
        "counts_per_token": {c: float(v) for c, v in zip(COUNTERS, per_shard.sum(0))},
        "energy_breakdown_j": {k: float(v) for k, v in breakdown.items()},
        "by_kind": {k: {"energy_j": v} for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "by_layer": [{"layer": name, "energy_j": float(e), "latency_s": float(t), "synaptic_ops": float(s)}
                     for name, e, t, s in zip(sim.layer_names, layer_energy, layer_latency, layer_synops)],
        "cores_used": sim.mapping.cores_used,
        "max_link_load_packets_per_token": max(loads.values()) if loads else 0.0,
        "per_token": [{"energy_j": float(e), "latency_s": float(t), "sparsity": float(sp)}
                      for e, t, sp in zip(r.energy_per_token, r.latency_per_token, r.sparsity_per_token)],
        "by_process": by_process,
        "by_core": {int(c): {"energy_j": float(core_energy[c]), "shards": int((sim.core == c).sum())} for c in used},
        "_core_energy": core_energy,
    }


def run_setup(graph: ProcessGraph, mapping: Mapping, mode: str) -> tuple[ProcessGraph, Mapping]:
    """The graph and mapping a mode runs on: the dense baseline of a low-bit or delta-event graph is the 16-bit
    model with float events and no delta events (`ProcessGraph.plain`), mapped anew onto the same topology (it
    needs another number of cores), at its minimal number of cores (fill 1, whatever fill the graph was mapped at)."""
    if mode != "dense":
        return graph, mapping
    full = graph.plain()
    if full is graph and mapping.graph_info.get("fill", 1.0) == 1.0:
        return graph, mapping
    from mapping import map_graph
    from mapping.topology import preset_names

    t = mapping.topology
    return full, map_graph(full, t.name if t.name in preset_names() else t, placement=mapping.placement or "bisection")


def simulate(graph: ProcessGraph, mapping: Mapping, costs: CostModel, tokens: list[int], modes=("thresholded",),
             progress: bool = False) -> dict[str, dict]:
    """Run the same tokens in each mode (see MODES) and summarise each run."""
    out = {}
    for mode in modes:
        # one graph for every mode: θ = 0 is an option of the run, not an edit of the graph
        overrides = None if mode == "thresholded" else MODE_OVERRIDES
        g, m = run_setup(graph, mapping, mode)
        sim = Simulator(g, m, costs, event_driven=(mode != "dense"), overrides=overrides)
        out[mode] = _run(sim, tokens, mode, progress)
        out[mode]["_logits"] = np.stack(sim.result.logits)
        out[mode]["_port_events"] = sim.port_events()
    return out


def _run(sim: Simulator, tokens: list[int], mode: str, progress: bool) -> dict:
    from tqdm import tqdm

    for t in tqdm(tokens, desc=f"simulating ({mode})", unit="tok", disable=not progress, leave=False):
        sim.step(int(t))
    return summarize(sim)


def public(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def settings(graph: ProcessGraph) -> dict:
    """What a simulated configuration is made of: weight and event bits, the head threshold, delta events."""
    p = graph.precision()
    head_t = [q for q in graph if q.kind == "threshold" and q.attrs.get("projection") == "head"]
    delta = graph.delta_sites()
    return {"weight_bits": p["weight_bits"], "event_bits": p["event_bits"], "low_bit_projections": p["low_bit_projections"],
            "head_threshold": bool(head_t and head_t[0].theta > 0),
            "delta_events": {"sites": len(delta), "theta_delta": sorted(set(delta.values()))} if delta else False,
            "dense_baseline": "θ = 0, every entry processed and sent, 16-bit weights, float events, no delta events"}


def results_json(runs: dict[str, dict], info: dict) -> dict:
    """The JSON of `eventllm simulate`: the thresholded run at top level, the others as blocks, with ratios."""
    main = public(runs["thresholded"])
    out = {**info, **main, "mode": MODES["thresholded"]}
    for mode in ("natural", "dense"):
        if mode in runs:
            other = public(runs[mode])
            out[mode] = {**other, "mode": MODES[mode]}
            out[f"energy_ratio{'' if mode == 'dense' else '_' + mode}"] = other["energy_per_token_j"] / main["energy_per_token_j"]
            out[f"latency_ratio{'' if mode == 'dense' else '_' + mode}"] = other["latency_per_token_s"] / main["latency_per_token_s"]
    return out


def plots(runs: dict[str, dict], mapping: Mapping, folder: str | Path, title: str) -> list[Path]:
    """energy_breakdown.png, layer_latency.png, core_activity.png in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    modes = [m for m in ("dense", "natural", "thresholded") if m in runs]
    groups = list(runs[modes[0]]["energy_breakdown_j"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bottom = np.zeros(len(modes))
    for g in groups:
        vals = np.array([runs[m]["energy_breakdown_j"][g] * 1e6 for m in modes])
        if vals.any():
            ax.bar(modes, vals, bottom=bottom, label=g)
            bottom += vals
    ax.set_ylabel("energy per token (µJ)")
    ax.set_title(f"Energy per token by kind — {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "energy_breakdown.png", dpi=110)
    plt.close(fig)
    written.append(folder / "energy_breakdown.png")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    layers = [b["layer"] for b in runs[modes[0]]["by_layer"]]
    width = 0.8 / len(modes)
    for i, m in enumerate(modes):
        ax.bar(np.arange(len(layers)) + i * width, [b["latency_s"] * 1e6 for b in runs[m]["by_layer"]], width, label=m)
    ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, layers)
    ax.set_ylabel("latency per token (µs)")
    ax.set_title(f"Per-layer latency (critical path) — {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "layer_latency.png", dpi=110)
    plt.close(fig)
    written.append(folder / "layer_latency.png")

    t = mapping.topology
    if t.noc.kind != "custom":
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        im = ax.imshow(runs["thresholded"]["_core_energy"].reshape(t.rows, t.cols) * 1e9, cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax, label="nJ per token", shrink=0.8)
        ax.set_title(f"Energy per core per token (thresholded) — {title}")
        fig.tight_layout()
        fig.savefig(folder / "core_activity.png", dpi=110)
        plt.close(fig)
        written.append(folder / "core_activity.png")
    return written
