"""The simulator: a mapped process graph executed token by token as message passing between cores.

Per token, every process runs once in dependency order with the same numpy process models as the reference
executor (so the logits are the executor's, bit for bit), and every shard of it — on its core — is charged
for what an event-driven core does:

  Dense shard     reads the weight row segment of each input event it receives and accumulates
                  (synaptic ops = input events × its outputs; weight reads = the memory words that segment
                  fills: one per weight at 16 bits, 16/bits weights per word below); a shard split by inputs
                  sends its whole vector of partial sums. Precision (`synaptic_plan`): int8 events into int8
                  weights are int8 MACs (`synops_int8`, two per 2×INT8 instruction on SENECA); int4 weights are
                  first unpacked to int8 (one `weight_unpack` per weight); float events into integer weights
                  need each weight extracted and converted (two unpacks per weight) before an FP16 MAC; each
                  output of an integer Dense is scaled once (neuron ops: 1, or 3 with int8 events: I2F and
                  two multiplies); the receiver of delta events reads its kept sums (32-bit: two words
                  each), adds the token's sums (one op per output) and writes them back;
  other process   neuron ops per output entry (its process model's ops_per_entry), parameter reads, state
                  reads and writes, and what its model's extra_counts adds (table lookups, attention);
  every shard     captures its incoming events and generates one event per non-zero output entry;
  NoC             each event travels as one packet from the sending shard's core to every shard that needs
                  it (unicast, X-then-Y routes of the mapping), counted in packets, hops and chip crossings.

Counting is vectorised per process and per connection (prefix sums over the non-zero mask), never per
event. `event_driven=False` charges every entry as if it were non-zero: a conventional dense processor.

Latency per token is the critical path: a shard starts when the last packet it needs has arrived and
takes its compute cycles (events in and out serially, ops spread over the core's NPEs); transfers take
hop and chip-link cycles. Cores are assumed to work on their shards without contention; energy is dynamic
energy (Σ count × energy per action) plus static power × latency × cores used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eventllm.errors import MappingError
from eventllm.process.executor import process_inputs
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Threshold
from eventllm.process.models import model_for, packed_words
from mapping.partition import per_output_params
from mapping.result import Mapping
from sim.costs import CostModel

COUNTERS = ("events_in", "events_out", "synops", "synops_int8", "neuron_ops", "neuron_updates", "weight_reads",
            "weight_unpacks", "param_reads", "state_reads", "state_writes", "packets", "hops", "chip_crossings")
C = {name: i for i, name in enumerate(COUNTERS)}

ENERGY_GROUPS = {
    "synaptic": (("synops", "synop"), ("synops_int8", "synop_int8"), ("weight_reads", "weight_read"),
                 ("weight_unpacks", "weight_unpack")),
    "neuron": (("neuron_ops", "neuron_op"), ("neuron_updates", "neuron_update"), ("param_reads", "param_read")),
    "state memory": (("state_reads", "state_read"), ("state_writes", "state_write")),
    "events": (("events_in", "event_in"), ("events_out", "event_out")),
    "noc": (("packets", "packet"), ("hops", "noc_hop"), ("chip_crossings", "chip_link")),
}


def synaptic_plan(dense) -> dict:
    """How a Dense process's synapses run, from its weight bits and the bits of the events feeding it.

    weight_bits      storage width of a weight (16: one per memory word)
    int8_macs        int8 events × int8/int4 weights: integer MACs (SENECA's 2×INT8 instruction does two)
    unpacks_per_weight  int4 → int8 before integer MACs: 1; integer weights with float events: 2 (extract, I2F)
    ops_per_output   the per-output scaling of an integer Dense: 1 multiply, or with int8 events 3 (I2F of the
                     integer sum, times the weight scale, times the event scale)
    """
    bits = dense.weight_bits
    events8 = dense.input_event_bits == 8
    if bits >= 16:
        return {"weight_bits": 16, "int8_macs": False, "unpacks_per_weight": 0, "ops_per_output": 0}
    if events8:
        return {"weight_bits": bits, "int8_macs": True, "unpacks_per_weight": 1 if bits == 4 else 0, "ops_per_output": 3}
    return {"weight_bits": bits, "int8_macs": False, "unpacks_per_weight": 2, "ops_per_output": 1}


@dataclass
class SimResult:
    """Totals over the simulated tokens plus per-token figures."""

    tokens: int = 0
    counts: np.ndarray | None = None  # [shards, counters] summed over tokens
    energy_per_token: list = field(default_factory=list)  # joules
    latency_per_token: list = field(default_factory=list)  # seconds
    sparsity_per_token: list = field(default_factory=list)
    layer_finish: list = field(default_factory=list)  # per token: finish time of each layer group
    logits: list = field(default_factory=list)
    pair_packets: np.ndarray | None = None  # packets per shard-to-shard pair, summed over tokens
    port_events: np.ndarray | None = None  # non-zero entries sent by each out-port (`Simulator.port_events`), summed


class Simulator:
    """Runs `graph` mapped by `mapping` with the costs of `costs`.

    >>> sim = Simulator(graph, mapping, load_costs("seneca"))      # doctest: +SKIP
    >>> logits = sim.step(token)                                   # and sim.result has the counts
    """

    def __init__(self, graph: ProcessGraph, mapping: Mapping, costs: CostModel, event_driven: bool = True,
                 overrides: dict[str, float] | None = None):
        names = {s.process for s in mapping.shards}
        if names != set(graph.processes):
            raise MappingError(f"the mapping covers {len(names)} processes, the graph has {len(graph)}; "
                               "map this graph with `eventllm map` first")
        self.graph, self.mapping, self.costs, self.event_driven = graph, mapping, costs, event_driven
        self.topo = mapping.topology
        self.order = graph.topological_order()
        # the simulator owns the run state (the models'); `overrides` (e.g. {"theta": 0}) are options of this run
        self.models = {p.name: model_for(p, overrides) for p in self.order}
        self.special = [p for p in self.order if self.models[p.name].has_extra_counts()]
        self.graph_inputs = {port.path for port in graph.inputs()}
        self.n_shards = len(mapping.shards)
        self.core = mapping.shard_core
        self.shards_of: dict[str, np.ndarray] = {}
        for s in mapping.shards:
            self.shards_of.setdefault(s.process, []).append(s.id)
        self.shards_of = {k: np.array(v) for k, v in self.shards_of.items()}
        sh = mapping.shards
        self.lo = np.array([s.lo for s in sh])
        self.hi = np.array([s.hi for s in sh])
        self.split = [s.split for s in sh]
        self.thresholds = [p for p in self.order if isinstance(p, Threshold)]
        self._plan_pairs()
        self._plan_layers()
        self.reset()

    # --- planning -----------------------------------------------------------------------------------------
    def _out_range(self, sid: int, size: int) -> list[tuple[int, int]]:
        """Which entries of its process's out-vector a shard produces."""
        s = self.mapping.shards[sid]
        if s.split == "outputs":
            return [(s.lo, s.hi)]
        if s.split == "heads":
            hd = size // s.axis
            return [(s.lo * hd, s.hi * hd)]
        return [(0, size)]

    def _in_ranges(self, sid: int, size: int) -> list[tuple[int, int]]:
        """Which entries of an in-vector a shard needs."""
        s = self.mapping.shards[sid]
        if s.split == "inputs":
            return [(s.lo, s.hi)]
        if s.split == "heads":
            # its heads' slice of each part of the in-vector, the parts being head-major vectors of the process's
            # output size: attention's qkv has three (q, k, v), an in-port of a per-head kind (RWKV-7's) one
            d = sum(port.size for port in self.graph[s.process].out_ports.values())
            hd = d // s.axis
            return [(part * d + s.lo * hd, part * d + s.hi * hd) for part in range(size // d)]
        return [(0, size)]

    def _plan_pairs(self) -> None:
        """Lay every out-port end to end in one vector (per token, one prefix sum over its non-zero mask gives
        any range's event count) and express shards' outputs, inputs and the NoC pairs as ranges of it."""
        self.port_offset: dict[str, int] = {}
        n = 0
        for p in self.order:
            for port in p.out_ports.values():
                self.port_offset[port.path] = n
                n += port.size
        self.vector_size = n
        self.port_a = np.array(list(self.port_offset.values()), np.int64)
        self.port_b = self.port_a + np.array([self.graph.port(path).size for path in self.port_offset], np.int64)
        # each shard's outputs
        out_a = np.zeros(self.n_shards, np.int64)
        out_b = np.zeros(self.n_shards, np.int64)
        for p in self.order:
            first = next(iter(p.out_ports.values()))
            total = sum(port.size for port in p.out_ports.values())
            for sid in self.shards_of[p.name]:
                (a, b), = self._out_range(sid, total) if self.split[sid] != "inputs" else [(0, total)]
                out_a[sid], out_b[sid] = self.port_offset[first.path] + a, self.port_offset[first.path] + b
        self.out_a, self.out_b = out_a, out_b
        # each shard's inputs (ranges of its sources' out-ports) and the pairs that carry them
        in_rows, pair_rows = [], []
        self.process_pairs: dict[str, np.ndarray] = {}
        for p in self.order:
            mine = []
            for pname, port in p.in_ports.items():
                if not port.sources:
                    continue
                src = port.sources[0].src
                off = self.port_offset[src.path]
                for d in self.shards_of[p.name]:
                    for x, y in self._in_ranges(d, port.size):
                        in_rows.append((d, off + x, off + y))
                for s_ in self.shards_of[src.process.name]:
                    partial = self.split[s_] == "inputs"
                    out = [(0, src.size)] if partial else self._out_range(s_, src.size)
                    for d in self.shards_of[p.name]:
                        for a, b in out:
                            for x, y in self._in_ranges(d, port.size):
                                lo, hi = max(a, x), min(b, y)
                                if hi > lo:
                                    mine.append(len(pair_rows))
                                    pair_rows.append((s_, d, off + lo, off + hi, partial))
            self.process_pairs[p.name] = np.array(mine, dtype=np.int64)
        arr = np.array(in_rows, dtype=np.int64).reshape(-1, 3)
        self.in_shard, self.in_lo, self.in_hi = arr[:, 0], arr[:, 1], arr[:, 2]
        arr = np.array(pair_rows, dtype=np.int64).reshape(-1, 5)
        self.p_src, self.p_dst, self.p_lo, self.p_hi = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
        self.p_partial = arr[:, 4].astype(bool)
        a, b = self.core[self.p_src], self.core[self.p_dst]
        self.p_remote = a != b
        self.p_hops = np.where(self.p_remote, self.topo.hops(a, b), 0).astype(np.int64)
        self.p_crossings = np.asarray(self.topo.chip_crossings(a, b), dtype=np.int64) * self.p_remote
        # packets one event on a pair makes: one per destination shard on another core ("per_shard"), or, as SANA-FE
        # counts, one per destination core, the sender's own too ("per_core": shards of one core that read the same
        # range share a message)
        if self.costs.messages == "per_core":
            _, first = np.unique(np.stack([self.p_src, b, self.p_lo, self.p_hi], 1), axis=0, return_index=True)
            self.p_messages = np.zeros(len(self.p_src), np.int64)
            self.p_messages[first] = 1
        else:
            self.p_messages = self.p_remote.astype(np.int64)
        cy, clock = self.costs.cycles, self.topo.core.clock_hz
        self.p_transfer = (self.p_hops * cy["hop"] + self.p_crossings * cy["chip_link"]) / clock
        # per-shard constants: synaptic fan-out of an input event (and its memory words, unpacks and kind of MAC),
        # and the counts that do not depend on the data
        self.fanout = np.zeros(self.n_shards)
        self.words = np.zeros(self.n_shards)
        self.unpacks = np.zeros(self.n_shards)
        self.int_mac = np.zeros(self.n_shards, bool)
        self.static = np.zeros((self.n_shards, len(COUNTERS)))
        for p in self.order:
            ids = self.shards_of[p.name]
            model = self.models[p.name]
            if model.synaptic:
                n_out = p.out_ports["out"].size
                plan = synaptic_plan(p)
                for sid in ids:
                    rows = self.hi[sid] - self.lo[sid] if self.split[sid] == "outputs" else n_out
                    self.fanout[sid] = rows
                    self.words[sid] = packed_words(rows, plan["weight_bits"])
                    self.unpacks[sid] = plan["unpacks_per_weight"] * rows
                    self.int_mac[sid] = plan["int8_macs"]
                    if self.split[sid] != "inputs" or sid == ids[0]:  # bias and scale: once per output
                        self.static[sid, C["param_reads"]] += rows * per_output_params(p)
                        self.static[sid, C["neuron_ops"]] += rows * plan["ops_per_output"]
                    if p.accumulates:  # a delta receiver's kept sums (32-bit: two words): read, added to, written back
                        self.static[sid, C["state_reads"]] += 2 * rows
                        self.static[sid, C["state_writes"]] += 2 * rows
                        self.static[sid, C["neuron_ops"]] += rows
            elif not model.has_extra_counts():
                n_out = sum(port.size for port in p.out_ports.values())
                row = np.zeros(len(COUNTERS))
                row[C["neuron_updates"]] = n_out
                row[C["neuron_ops"]] = model.entry_ops() * n_out
                row[C["param_reads"]] = sum(v.value.size for v in p.vars.values() if v.role == "param")
                state = sum(v.value.size * v.words for v in p.vars.values() if v.role == "state")
                row[C["state_reads"]] = row[C["state_writes"]] = state
                if self.split[ids[0]] == "heads":  # each head group does its heads' share
                    self.static[ids] = ((self.hi[ids] - self.lo[ids]) / self.mapping.shards[ids[0]].axis)[:, None] * row
                else:
                    self.static[ids[0]] = row
        self.partial_shards = np.array([i for i in range(self.n_shards) if self.split[i] == "inputs"], dtype=np.int64)
        self.threshold_ranges = np.array([(self.port_offset[f"{p.name}.out"], self.port_offset[f"{p.name}.out"] + p.out_ports["out"].size)
                                          for p in self.thresholds], dtype=np.int64).reshape(-1, 2)

    def _plan_layers(self) -> None:
        layers = sorted({p.layer for p in self.order if p.layer is not None})
        self.layer_names = ["input"] + [f"L{i}" for i in layers] + ["output"]
        seen_layer = False
        group = {}
        for p in self.order:
            if p.layer is not None:
                seen_layer = True
                group[p.name] = 1 + layers.index(p.layer)
            else:
                group[p.name] = len(self.layer_names) - 1 if seen_layer else 0
        self.group_of_process = group
        self.group_of_shard = np.array([group[s.process] for s in self.mapping.shards])

    # --- running ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new sequence: every model's state back to its initial value, the counts cleared."""
        for m in self.models.values():
            m.reset()
        self.result = SimResult(counts=np.zeros((self.n_shards, len(COUNTERS))))

    def step(self, token: int) -> np.ndarray:
        """Simulate one token; returns the logits (and adds this token's counts, energy and latency to `result`)."""
        values: dict[str, np.ndarray] = {}
        token_vec = np.array([token], dtype=np.int64)
        for proc in self.order:
            inputs = process_inputs(proc, values, token_vec, self.graph_inputs)
            outputs = self.models[proc.name].run(inputs)
            for pname, y in outputs.items():
                values[f"{proc.name}.{pname}"] = y
        vec = np.concatenate([values[path] for path in self.port_offset])
        nonzero = vec != 0
        cum = np.zeros(self.vector_size + 1, np.int64)
        np.cumsum(nonzero if self.event_driven else np.ones(self.vector_size, bool), out=cum[1:])
        counts = self.static.copy()
        ev_in = np.bincount(self.in_shard, cum[self.in_hi] - cum[self.in_lo], self.n_shards)
        counts[:, C["events_in"]] = ev_in
        counts[:, C["events_out"]] = cum[self.out_b] - cum[self.out_a]
        part = self.partial_shards
        counts[part, C["events_out"]] = np.where(ev_in[part] > 0, self.out_b[part] - self.out_a[part], 0)
        self._synaptic_counts(counts, ev_in)
        for proc in self.special:  # data-dependent counts (table lookups, attention over the cache)
            ids = self.shards_of[proc.name]
            outputs = {pname: values[f"{proc.name}.{pname}"] for pname in proc.out_ports}
            self.models[proc.name].extra_counts(outputs, token, ids, self.lo[ids], self.hi[ids], counts, C)
        # messages: each pair carries the events in its range (a partial-sum pair: all of it, if its sender worked)
        ev = cum[self.p_hi] - cum[self.p_lo]
        if self.p_partial.any():
            ev = np.where(self.p_partial, np.where(ev_in[self.p_src] > 0, self.p_hi - self.p_lo, 0), ev)
        packets = ev * self.p_messages
        counts[:, C["packets"]] = np.bincount(self.p_src, packets, self.n_shards)
        counts[:, C["hops"]] = np.bincount(self.p_src, packets * self.p_hops, self.n_shards)
        counts[:, C["chip_crossings"]] = np.bincount(self.p_src, packets * self.p_crossings, self.n_shards)
        latency, layer_finish = self._latency(counts, ev)
        r = self.result
        r.tokens += 1
        r.counts += counts
        r.pair_packets = packets.astype(np.float64) if r.pair_packets is None else r.pair_packets + packets
        r.energy_per_token.append(self._energy(counts.sum(0), latency))
        r.latency_per_token.append(latency)
        r.layer_finish.append(layer_finish)
        if self.event_driven:
            full = cum
        else:
            full = np.zeros(self.vector_size + 1, np.int64)
            np.cumsum(nonzero, out=full[1:])
        sent = full[self.port_b] - full[self.port_a]  # the events (non-zero entries) each out-port sent
        r.port_events = sent if r.port_events is None else r.port_events + sent
        if len(self.threshold_ranges):
            a, b = self.threshold_ranges[:, 0], self.threshold_ranges[:, 1]
            r.sparsity_per_token.append(float(np.mean(1 - (full[b] - full[a]) / (b - a))))
        else:
            r.sparsity_per_token.append(0.0)
        out = values[self.graph.output]
        r.logits.append(out)
        return out

    def _synaptic_counts(self, counts: np.ndarray, ev_in: np.ndarray) -> None:
        """The Dense shards' counts of their input events ev_in [..., shards] into counts [..., shards, counters]."""
        synops = ev_in * self.fanout
        counts[..., C["synops"]] = np.where(self.int_mac, 0, synops)
        counts[..., C["synops_int8"]] = np.where(self.int_mac, synops, 0)
        counts[..., C["weight_reads"]] = ev_in * self.words
        counts[..., C["weight_unpacks"]] = ev_in * self.unpacks

    def port_events(self) -> dict[str, int]:
        """Events (non-zero entries) each out-port ('proc.port') sent over the tokens simulated: the logical events
        of the graph, whatever the shards (the executor's `counts.per_port`, and what the Lava backend counts)."""
        sent = self.result.port_events
        return {path: int(sent[i]) if sent is not None else 0 for i, path in enumerate(self.port_offset)}

    def link_loads(self) -> dict[tuple[int, int], float]:
        """Packets per token on every NoC link used (undirected), routed as the mapping routes them."""
        from mapping.place import link_loads

        r = self.result
        if r.pair_packets is None or not r.tokens:
            return {}
        keep = self.p_remote & (r.pair_packets > 0)
        return link_loads(self.core, self.p_src[keep], self.p_dst[keep], r.pair_packets[keep] / r.tokens, self.topo)

    def run(self, tokens) -> np.ndarray:
        return np.stack([self.step(int(t)) for t in tokens])

    # --- costs --------------------------------------------------------------------------------------------
    def _compute_cycles(self, counts: np.ndarray) -> np.ndarray:
        """Cycles of each shard for `counts` [..., shards, counters] (one token, or many: the trace engine)."""
        cy, npe = self.costs.cycles, self.topo.core.npe
        parallel = (counts[..., C["synops"]] * cy["synop"] + counts[..., C["synops_int8"]] * cy["synop_int8"]
                    + counts[..., C["weight_unpacks"]] * cy["weight_unpack"] + counts[..., C["neuron_ops"]] * cy["neuron_op"])
        return (counts[..., C["events_in"]] * cy["event_in"] + np.ceil(parallel / npe)
                + counts[..., C["events_out"]] * cy["event_out"] + counts[..., C["packets"]] * cy["packet"])

    def _latency(self, counts: np.ndarray, events: np.ndarray) -> tuple[float, list[float]]:
        """The critical path of one token, whose pairs carried `events` (a pair on one core: no transfer time)."""
        compute = self._compute_cycles(counts) / self.topo.core.clock_hz
        arrive_delay = np.where(events > 0, self.p_transfer, 0.0)
        finish = np.zeros(self.n_shards)
        group_finish = np.zeros(len(self.layer_names))
        for proc in self.order:
            ids = self.shards_of[proc.name]
            pairs = self.process_pairs[proc.name]
            if len(ids) == 1:
                start = (finish[self.p_src[pairs]] + arrive_delay[pairs]).max() if len(pairs) else 0.0
                finish[ids[0]] = start + compute[ids[0]]
                done = finish[ids[0]]
            else:
                start = np.zeros(len(ids))
                np.maximum.at(start, self.p_dst[pairs] - ids[0], finish[self.p_src[pairs]] + arrive_delay[pairs])
                finish[ids] = start + compute[ids]  # a process's shards have consecutive ids
                done = finish[ids].max()
            g = self.group_of_process[proc.name]
            if done > group_finish[g]:
                group_finish[g] = done
        return float(finish.max()), np.maximum.accumulate(group_finish).tolist()

    def _energy(self, totals: np.ndarray, latency: float) -> float:
        return sum(self.energy_breakdown(totals, latency).values())

    def energy_breakdown(self, totals: np.ndarray, latency: float) -> dict[str, float]:
        """Joules by kind of action for the given counter totals (totals [counters] and a latency, or
        [counters, tokens] and latencies [tokens]: then each kind's joules per token)."""
        e = self.costs.energy
        out = {g: sum(totals[C[c]] * e[k] for c, k in pairs) for g, pairs in ENERGY_GROUPS.items()}
        out["static"] = e["static_power_w"] * latency * self.mapping.cores_used
        return out
