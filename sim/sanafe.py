"""SANA-FE as a second opinion: a mapped graph's projections run on SANA-FE, figure beside figure with ours.

SANA-FE (PyPI `sanafe`, SLAM-Lab) simulates spiking neurons on a described architecture; its Loihi model was
calibrated against silicon. A projection (a Dense process) becomes one SANA-FE network:

  architecture  our topology as SANA-FE tiles: one tile per core of our mesh, core c at tile c, the mesh
                `rows` tiles wide and `cols` high, so that SANA-FE's tile (x, y) = divmod(c, cols) is our
                (row, col) and its hops |dx| + |dy| are ours. Per-action energy and latency come from our cost
                table (`costs="ours"`: the same price for the same action in both) or from SANA-FE's own
                loihi.yaml units (`costs="loihi.yaml"`: SANA-FE's accounting, for the figures it was calibrated on);
  sources       one input neuron per entry of the out-port feeding the projection, on the core of the shard that
                produces it, each on its own input soma unit (SANA-FE garbles trains that share one), spiking at
                step t where our recorded event mask has a non-zero entry at token t;
  targets       per shard of the projection, its output neurons (its rows, or all rows for a shard cut by inputs:
                its partial sums) on the shard's core, connected to the sources it reads with the shard's weights,
                LIF neurons that never fire (threshold out of reach): the input side of the projection only.

SANA-FE has no graded spikes: a message carries no value, and neither energy nor latency depends on it. So
counts, energy and latency are compared; values (neuron dynamics, logits) are not.

What each simulator charges, by part (`PARTS`), for one projection over T tokens:
  synapse   ours: synaptic ops, weight reads and unpacks of its shards; SANA-FE: energy_process_spike per
            synapse reached (+ dendrite updates)
  neuron    ours: the shards' per-output work (bias/scale reads, scaling ops) and the sources' output events
            (event_out); SANA-FE: the soma, energy_access_neuron for every mapped neuron every step (idle too),
            energy_update_neuron for a neuron whose potential is non-zero, energy_spike_out per spike
  network   ours: packets (one per event and destination shard on another core) × packet, hops × noc_hop,
            chip crossings × chip_link, events in × event_in; SANA-FE: one message per spike and destination
            core (its own core too) × (energy_message_out + energy_message_in), hops × hop energy
Latency: ours, per token, the slowest shard's synaptic side (events in × event_in + synaptic cycles / NPEs);
SANA-FE `simple`: per step the slowest core's max(neuron side, message side) + sync; `detailed`: every
message scheduled (hop latency, queues) + sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eventllm.errors import ConfigError, EventLLMError
from eventllm.process.library import Dense
from sim.costs import CostModel
from mapping.partition import per_output_params
from sim.engine import C, synaptic_plan

INSTALL_HINT = "run `make setup` (it installs sanafe 2.2.9 into .venv, see .ci/install-sanafe)"
PARTS = ("synapse", "neuron", "network")
COSTS = ("ours", "loihi.yaml")
NEVER = 1e30  # a LIF threshold out of reach: the targets accumulate and never fire


class SanafeMissing(EventLLMError):
    """The sanafe package is not installed."""


def require_sanafe():
    """The `sanafe` module, or one error naming the fix."""
    try:
        import sanafe
    except ImportError:
        raise SanafeMissing(f"the sanafe backend needs the Python package sanafe, which is not installed; {INSTALL_HINT}") from None
    return sanafe


@dataclass
class Projection:
    """One Dense process as SANA-FE networks see it."""

    name: str
    port: str  # the out-port feeding it ('proc.port'): its mask drives the sources
    size: int  # entries of that port
    sources: list[tuple[int, int, int]]  # (core, lo, hi): source neurons [lo, hi) of the port on a core
    targets: list[dict]  # per shard: shard, core, rows (lo, hi), inputs (lo, hi), unit (its `Unit`)
    shards: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    src_shards: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def projections(engine, names: list[str] | None = None, layer: int | None = None) -> list[Projection]:
    """The Dense processes of `engine`'s graph (a `sim.engine.Simulator`: its planning is reused) as `Projection`s:
    those named, or those of `layer`, or all."""
    graph, mapping = engine.graph, engine.mapping
    dense = [p for p in engine.order if isinstance(p, Dense)]
    if names:
        unknown = [n for n in names if n not in graph.processes or not isinstance(graph[n], Dense)]
        if unknown:
            raise ConfigError(f"{unknown[0]!r} is not a projection (Dense process) of the graph; use one of "
                              f"{', '.join(p.name for p in dense[:8])}, …")
        dense = [p for p in dense if p.name in names]
    elif layer is not None:
        dense = [p for p in dense if p.layer == layer]
        if not dense:
            raise ConfigError(f"the graph has no projection in layer {layer}; give a layer of 0..{graph.meta.get('n_layer', 1) - 1}")
    out = []
    for p in dense:
        port = p.in_ports["inp"]
        if not port.sources:
            raise ConfigError(f"{p.name} reads a graph input, not an out-port: it has no events to drive SANA-FE with")
        src = port.sources[0].src
        off = engine.port_offset[src.path]
        pairs = engine.process_pairs[p.name]
        sources = {}
        for k in pairs:
            s = int(engine.p_src[k])
            if engine.split[s] == "inputs":
                raise ConfigError(f"{p.name} is fed by partial sums of a shard cut by inputs; SANA-FE has no counterpart")
            lo, hi = int(engine.p_lo[k]) - off, int(engine.p_hi[k]) - off
            a, b = sources.get(s, (lo, hi))
            sources[s] = (min(a, lo), max(b, hi))
        n_out, n_in = p.shape
        targets = []
        for sid in engine.shards_of[p.name]:
            sh = mapping.shards[sid]
            rows = (sh.lo, sh.hi) if sh.split == "outputs" else (0, n_out)
            inputs = (sh.lo, sh.hi) if sh.split == "inputs" else (0, n_in)
            targets.append({"shard": int(sid), "core": int(engine.core[sid]), "rows": rows, "inputs": inputs,
                            "unit": unit_of(p)})
        out.append(Projection(p.name, src.path, src.size, [(int(engine.core[s]), a, b) for s, (a, b) in sorted(sources.items())],
                              targets, np.array(engine.shards_of[p.name]), np.array(sorted(sources))))
    return out


@dataclass(frozen=True, order=True)
class Unit:
    """The kind of synaptic work of a Dense's shards: what its SANA-FE synapse and target soma units are priced for."""

    weight_bits: int
    int8_macs: bool
    unpacks_per_weight: int
    ops_per_output: int
    params_per_output: int  # bias, scale
    accumulates: bool  # a delta receiver's kept sums

    @property
    def name(self) -> str:
        return (f"w{self.weight_bits}{'i8' if self.int8_macs else ''}u{self.unpacks_per_weight}o{self.ops_per_output}"
                f"p{self.params_per_output}{'a' if self.accumulates else ''}")


def unit_of(proc) -> Unit:
    """The `Unit` of a Dense process (`sim.engine.synaptic_plan`)."""
    plan = synaptic_plan(proc)
    return Unit(plan["weight_bits"], plan["int8_macs"], plan["unpacks_per_weight"], plan["ops_per_output"],
                per_output_params(proc), bool(proc.accumulates))


# --- the architecture ---------------------------------------------------------------------------------------
def _unit_costs(u: Unit, costs: CostModel, npe: int, clock: float) -> tuple[dict, dict]:
    """(synapse attributes, target soma attributes) of a unit kind at our costs: the same price per action."""
    e, cy = costs.energy, costs.cycles
    per_synapse_j = ((e["synop_int8"] if u.int8_macs else e["synop"]) + e["weight_read"] * u.weight_bits / 16
                     + u.unpacks_per_weight * e["weight_unpack"])
    per_synapse_s = ((cy["synop_int8"] if u.int8_macs else cy["synop"]) + u.unpacks_per_weight * cy["weight_unpack"]) / npe / clock
    # our per-output work of a Dense shard, every token whatever the events: SANA-FE's access of every mapped neuron
    acc = int(u.accumulates)
    access_j = (u.params_per_output * e["param_read"] + (u.ops_per_output + acc) * e["neuron_op"]
                + acc * 2 * (e["state_read"] + e["state_write"]))
    synapse = {"model": "current_based", "energy_process_spike": per_synapse_j, "latency_process_spike": per_synapse_s}
    soma = {"model": "leaky_integrate_fire", "energy_access_neuron": access_j, "latency_access_neuron": 0.0,
            "energy_update_neuron": 0.0, "latency_update_neuron": 0.0, "energy_spike_out": 0.0, "latency_spike_out": 0.0}
    return synapse, soma


def _loihi_units() -> dict:
    """SANA-FE's own Loihi units (its loihi.yaml), by role."""
    import yaml
    from importlib.resources import files

    arch = yaml.safe_load((files("sanafe.examples") / "loihi.yaml").read_text())["architecture"]
    tile = arch["tile"][0]
    core = tile["core"][0]

    def unit(kind, name):
        return next(u["attributes"] for u in core[kind] if u["name"].startswith(name))

    return {"arch": arch["attributes"], "tile": tile["attributes"], "axon_in": unit("axon_in", "loihi_in"),
            "synapse": unit("synapse", "loihi_dense_synapse"), "dendrite": unit("dendrite", "loihi_dendrites"),
            "soma": unit("soma", "loihi_lif"), "input": unit("soma", "loihi_inputs"), "axon_out": unit("axon_out", "loihi_out")}


def architecture(topology, costs: CostModel | str, projs: list[Projection]) -> dict:
    """The SANA-FE architecture (as a dict for its YAML, `write_architecture`) of `topology` priced by `costs` (our
    `CostModel`, or "loihi.yaml" for SANA-FE's own units), with the input and target units `projs` need."""
    if topology.noc.kind != "mesh":
        raise ConfigError(f"SANA-FE models a 2-D mesh; the mapping is onto a {topology.noc.kind} ({topology.name}): map onto a mesh topology")
    n = topology.n_cores
    inputs = np.zeros(n, np.int64)  # input units a core needs: the most sources it holds in any one projection
    neurons = np.zeros(n, np.int64)
    for p in projs:
        here = np.zeros(n, np.int64)
        for core, lo, hi in p.sources:
            here[core] += hi - lo
        for t in p.targets:
            here[t["core"]] += t["rows"][1] - t["rows"][0]
        neurons = np.maximum(neurons, here)
        src = np.zeros(n, np.int64)
        for core, lo, hi in p.sources:
            src[core] += hi - lo
        inputs = np.maximum(inputs, src)
    kinds = sorted({t["unit"] for p in projs for t in p.targets})
    clock, npe = topology.core.clock_hz, topology.core.npe
    if isinstance(costs, CostModel):
        e, cy = costs.energy, costs.cycles
        hop = {f"{k}_{d}_hop": v for d in ("north", "east", "south", "west")
               for k, v in (("energy", e["noc_hop"]), ("latency", cy["hop"] / clock))}
        attrs = {"topology": "mesh", "width": topology.rows, "height": topology.cols, "link_buffer_size": 16,
                 "sync_model": "fixed", "latency_sync": 0.0}
        axon_in = {"energy_message_in": e["event_in"], "latency_message_in": cy["event_in"] / clock}
        axon_out = {"energy_message_out": e["packet"], "latency_message_out": 0.0}
        dendrite = {"model": "accumulator", "energy_update": 0.0, "latency_update": 0.0}
        units = {k: _unit_costs(k, costs, npe, clock) for k in kinds}
        source = {"model": "input", "energy_access_neuron": 0.0, "latency_access_neuron": 0.0, "energy_update_neuron": 0.0,
                  "latency_update_neuron": 0.0, "energy_spike_out": e["event_out"], "latency_spike_out": 0.0}
    elif costs == "loihi.yaml":
        lo = _loihi_units()
        hop = lo["tile"]
        attrs = {k: v for k, v in lo["arch"].items() if k not in ("width", "height")} | {"width": topology.rows, "height": topology.cols}
        axon_in, axon_out, dendrite, source = lo["axon_in"], lo["axon_out"], lo["dendrite"], lo["input"]
        units = {k: (lo["synapse"], lo["soma"]) for k in kinds}
    else:
        raise ConfigError(f"unknown SANA-FE costs {costs!r}; use one of {', '.join(COSTS)}")
    tiles = []
    for c in range(n):
        soma = [{"name": f"tgt_{k.name}", "attributes": units[k][1]} for k in kinds]
        if inputs[c]:
            soma.append({"name": f"in[0..{inputs[c] - 1}]", "attributes": source})
        core = {"name": "core", "attributes": {"buffer_position": "soma", "buffer_inside_unit": False,
                                               "max_neurons_supported": int(max(neurons[c], 1))},
                "axon_in": [{"name": "axon_in", "attributes": axon_in}],
                "synapse": [{"name": f"syn_{k.name}", "attributes": units[k][0]} for k in kinds],
                "dendrite": [{"name": "dendrite", "attributes": dendrite}],
                "soma": soma, "axon_out": [{"name": "axon_out", "attributes": axon_out}]}
        tiles.append({"name": f"tile{c}", "attributes": hop, "core": [core]})
    return {"architecture": {"name": f"eventllm_{topology.name}", "attributes": attrs, "tile": tiles}}


def write_architecture(arch: dict, path: str | Path) -> Path:
    """Write a SANA-FE architecture YAML file at once."""
    import yaml

    from eventllm.atomic import write_text

    class Plain(yaml.SafeDumper):  # every unit written out: SANA-FE's reader has no YAML aliases
        def ignore_aliases(self, data):
            return True

    return write_text(path, yaml.dump(arch, Dumper=Plain, sort_keys=False, width=120))


# --- one projection on SANA-FE ------------------------------------------------------------------------------
def network(sanafe, arch, graph, proj: Projection, mask: np.ndarray):
    """The SANA-FE network of `proj`: its sources spiking as `mask` [T, size] says, its targets with its weights."""
    net = sanafe.Network()
    cores = arch.cores()
    dense = graph[proj.name]
    w = dense.vars["weights"].value
    groups = []
    used = {}
    for core, lo, hi in proj.sources:
        g = net.create_neuron_group(f"src{core}_{lo}", hi - lo, model_attributes={})
        for i, neuron in enumerate(g.neurons):
            k = used.get(core, 0) + i
            neuron.set_attributes(soma_hw_name=f"in[{k}]", model_attributes={"spikes": mask[:, lo + i].astype(int).tolist()})
        used[core] = used.get(core, 0) + hi - lo
        g.map_to_core(cores[core])
        groups.append((g, lo, hi))
    for t in proj.targets:
        r0, r1 = t["rows"]
        c0, c1 = t["inputs"]
        tgt = net.create_neuron_group(f"tgt{t['shard']}", r1 - r0, soma_hw_name=f"tgt_{t['unit'].name}",
                                      default_synapse_hw_name=f"syn_{t['unit'].name}", model_attributes={"threshold": NEVER})
        tgt.map_to_core(cores[t["core"]])
        for g, lo, hi in groups:
            a, b = max(lo, c0), min(hi, c1)
            if b <= a:
                continue
            block = np.asarray(w[r0:r1, a:b], dtype=np.float64)
            if a == lo and b == hi:  # source-major weights of the whole group
                g.connect_neurons_dense(tgt, {"weight": block.T.ravel().tolist()})
            else:
                pairs = [(i - lo, j) for i in range(a, b) for j in range(r1 - r0)]
                g.connect_neurons_sparse(tgt, {"weight": block.T.ravel().tolist()}, pairs)
    return net


def run_projection(sanafe, arch, graph, proj: Projection, mask: np.ndarray, timing: str = "simple") -> dict:
    """`proj` on SANA-FE over the T tokens of `mask` ([T, size] non-zero = event): its figures (`FIGURES`)."""
    net = network(sanafe, arch, graph, proj, mask)
    chip = sanafe.SpikingChip(arch)
    chip.load(net)
    r = chip.sim(int(mask.shape[0]), timing_model=timing, perf_trace=True)
    perf = r["perf_trace"]
    en = r["energy"]
    T = int(mask.shape[0])
    return {"tokens": T, "source_events": int(np.count_nonzero(mask)), "synaptic_events": int(r["spikes"]),
            "messages": int(r["packets_sent"]), "hops": int(sum(perf["hops"])),
            "energy_j": float(en["total"]),
            "energy_by_part_j": {"synapse": float(en["synapse"] + en["dendrite"]), "neuron": float(en["soma"]),
                                 "network": float(en["network"])},
            "latency_s": float(r["sim_time"]) / T, "timing": timing}


# --- the same projection as our simulator counts it ---------------------------------------------------------
def ours(engine, proj: Projection, pairs: np.ndarray, shard_counts: np.ndarray, pair_packets: np.ndarray,
         src_counts: np.ndarray) -> dict:
    """Our figures of `proj` from a trace engine's recorded per-token counters: `shard_counts` [T, shards, counters]
    of its shards, `pair_packets` [T, pairs] of the NoC pairs into them (`pairs`, indices of the engine's pairs)
    and `src_counts` [T, source shards, counters] of the shards feeding it."""
    e, cy = engine.costs.energy, engine.costs.cycles
    clock, npe = engine.topo.core.clock_hz, engine.topo.core.npe
    tot = shard_counts.sum(0)  # [shards, counters]
    col = lambda name: tot[:, C[name]].sum()  # noqa: E731
    synapse = (col("synops") * e["synop"] + col("synops_int8") * e["synop_int8"] + col("weight_reads") * e["weight_read"]
               + col("weight_unpacks") * e["weight_unpack"])
    neuron = (col("param_reads") * e["param_read"] + col("neuron_ops") * e["neuron_op"] + col("state_reads") * e["state_read"]
              + col("state_writes") * e["state_write"] + src_counts[..., C["events_out"]].sum() * e["event_out"])
    packets = pair_packets.sum(0)
    hops = int((packets * engine.p_hops[pairs]).sum())
    crossings = int((packets * engine.p_crossings[pairs]).sum())
    network = (packets.sum() * e["packet"] + hops * e["noc_hop"] + crossings * e["chip_link"] + col("events_in") * e["event_in"])
    c = shard_counts
    side = (c[..., C["events_in"]] * cy["event_in"] + np.ceil((c[..., C["synops"]] * cy["synop"] + c[..., C["synops_int8"]] * cy["synop_int8"]
                                                            + c[..., C["weight_unpacks"]] * cy["weight_unpack"]) / npe))
    T = shard_counts.shape[0]
    return {"tokens": T, "source_events": int(src_counts[..., C["events_out"]].sum()),
            "synaptic_events": int(col("synops") + col("synops_int8")), "messages": int(packets.sum()), "hops": hops,
            "chip_crossings": crossings, "energy_j": float(synapse + neuron + network),
            "energy_by_part_j": {"synapse": float(synapse), "neuron": float(neuron), "network": float(network)},
            "latency_s": float(side.max(1).sum() / clock / T)}


def messages_per_core(proj: Projection, mask: np.ndarray) -> int:
    """Messages counted SANA-FE's way: one per source event and distinct destination core (its own core too)."""
    total = 0
    for core, lo, hi in proj.sources:
        dests = {t["core"] for t in proj.targets if t["inputs"][0] < hi and lo < t["inputs"][1]}
        total += int(np.count_nonzero(mask[:, lo:hi])) * len(dests)
    return total


def agreement(a: dict, b: dict) -> dict:
    """Relative differences of `b` from `a` (the counts as differences) for the compared keys."""
    out = {}
    for k in ("synaptic_events", "messages", "hops"):
        out[k] = int(b[k]) - int(a[k])
    if "messages_per_destination_core" in a:  # ours counted SANA-FE's way
        out["messages_per_destination_core"] = int(b["messages"]) - int(a["messages_per_destination_core"])
    for k in ("energy_j", "latency_s"):
        out[k] = (b[k] - a[k]) / a[k] if a[k] else (0.0 if not b[k] else math.inf)
    for k in PARTS:
        x, y = a["energy_by_part_j"][k], b["energy_by_part_j"][k]
        out[f"energy_{k}"] = (y - x) / x if x else (0.0 if not y else math.inf)
    return out


# --- the whole comparison -----------------------------------------------------------------------------------
class Comparison:
    """Our trace engine and SANA-FE on the same tokens, projection by projection.

    >>> cmp = Comparison(TraceEngine(graph, mapping, costs), layer=0)          # doctest: +SKIP
    >>> cmp.add(tokens, masks)          # the torch model's event masks (eventllm.masks), chunk after chunk
    >>> cmp.run()["projections"][0]["sanafe"]["synaptic_events"]
    """

    def __init__(self, engine, names: list[str] | None = None, layer: int | None = None):
        self.sanafe = require_sanafe()  # before any work
        self.engine = engine
        self.projs = projections(engine, names, layer)
        self.shards = np.unique(np.concatenate([np.concatenate([p.shards, p.src_shards]) for p in self.projs]))
        self.pairs = engine.record(self.shards)
        self.masks: dict[str, list[np.ndarray]] = {p.port: [] for p in self.projs}

    def add(self, tokens, masks: dict[str, np.ndarray]) -> None:
        """Count `tokens` on our engine and keep the event masks of the projections' input ports (a port without a
        mask sends every entry, as the trace engine takes it)."""
        self.engine.add(tokens, masks)
        for port, kept in self.masks.items():
            m = masks.get(port)
            kept.append(np.asarray(m) != 0 if m is not None else np.ones((len(tokens), self.engine.graph.port(port).size), bool))

    def run(self, timings=("simple", "detailed"), costs=COSTS, folder: str | Path | None = None, progress: bool = False) -> dict:
        """Each projection on SANA-FE at our costs (every timing of `timings`) and at SANA-FE's loihi.yaml (the first
        timing), beside our figures: {"costs", "tokens", "projections": [{"name", "ours", "sanafe", …}]}. The
        architecture files go to `folder` (a temporary folder when None)."""
        import tempfile

        eng = self.engine
        counts = np.concatenate([a for a, _ in eng.recorded])
        packets = np.concatenate([b for _, b in eng.recorded])
        masks = {port: np.concatenate(kept) for port, kept in self.masks.items()}
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(folder) if folder is not None else Path(tmp)
            archs = {}
            for c in costs:
                arch = architecture(eng.topo, eng.costs if c == "ours" else c, self.projs)
                path = write_architecture(arch, where / f"sanafe_arch_{c.replace('.yaml', '')}.yaml")
                archs[c] = self.sanafe.load_arch(str(path))
            rows = []
            for i, p in enumerate(self.projs):
                if progress:
                    print(f"SANA-FE {i + 1}/{len(self.projs)}: {p.name}", flush=True)
                mine = np.isin(eng.p_dst[self.pairs], p.shards)
                row = {"name": p.name, "ours": ours(eng, p, self.pairs[mine], counts[:, np.searchsorted(self.shards, p.shards)],
                                                    packets[:, mine], counts[:, np.searchsorted(self.shards, p.src_shards)])}
                row["ours"]["messages_per_destination_core"] = messages_per_core(p, masks[p.port])
                for c in costs:
                    for t in (timings if c == "ours" else timings[:1]):
                        key = "sanafe" + ("" if c == "ours" else "_loihi_yaml") + ("" if t == timings[0] else f"_{t}")
                        with _quiet():
                            row[key] = run_projection(self.sanafe, archs[c], eng.graph, p, masks[p.port], t)
                if "sanafe" in row:
                    row["agreement"] = agreement(row["ours"], row["sanafe"])
                rows.append(row)
        return {"costs": eng.costs.name, "timing": timings[0], "tokens": int(counts.shape[0]), "projections": rows}


class _quiet:
    """SANA-FE's C++ core prints its progress on the process's stdout: sent to /dev/null while it runs."""

    def __enter__(self):
        import os
        import sys

        sys.stdout.flush()
        self.saved = os.dup(1)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)

    def __exit__(self, *exc):
        import os

        os.dup2(self.saved, 1)
        os.close(self.saved)
        return False
