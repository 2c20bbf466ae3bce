"""Partition: cut every process into shards that fit one core's memory, and estimate the traffic between them.

A Dense process too big for a core is split either
  * by outputs (rows of W): every shard needs every input event (multicast), each output leaves one shard; or
  * by inputs (columns of W): each input event goes to one shard, but every shard sends a full vector of
    partial sums for the consumer to add up;
whichever sends fewer events per token at the measured event rates (dense rates when none were measured).
Embedding tables split by vocabulary rows (a token reads one shard), attention caches by heads. Memory
counts the weights and parameters at the core's word width, plus state (a delta receiver's kept sums
included) and input/output buffers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from eventllm.errors import MappingError
from eventllm.process.graph import ProcessGraph
from eventllm.process.models import model_class_for
from mapping.topology import Topology


@dataclass
class Shard:
    id: int
    process: str
    kind: str
    layer: int | None
    split: str  # whole | outputs | inputs | rows | heads
    part: int
    parts: int
    lo: int  # range along the split axis: W's rows (outputs), W's columns (inputs), table rows, heads
    hi: int
    axis: int  # length of the split axis
    param_bytes: int  # weights (at their bits: 16-bit weights at the core's word width) and fixed parameters (word width)
    state_bytes: int
    buffer_bytes: int

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.state_bytes + self.buffer_bytes

    @property
    def fraction(self) -> float:
        return (self.hi - self.lo) / self.axis if self.axis else 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def _nbytes(elements: int, word_bytes: float) -> int:
    return int(math.ceil(elements * word_bytes))


def port_rates(graph: ProcessGraph) -> dict[str, float]:
    """Expected events per token on every out-port: measured (graph.meta['event_rates']) or dense."""
    measured = graph.meta.get("event_rates", {}).get("ports", {})
    return {port.path: float(measured.get(port.path, port.size)) for p in graph for port in p.out_ports.values()}


def _input_rate(proc, rates: dict[str, float]) -> float:
    port = proc.in_ports["inp"]
    return rates[port.sources[0].src.path] if port.sources else float(port.size)


def weight_bytes(proc, wb: float) -> float:
    """Bytes per weight of a process: its weight bits where they are below 16 (integer weights), else the word's."""
    bits = proc.attrs.get("weight_bits", 16)
    return bits / 8 if bits < 16 else wb


def per_output_params(proc) -> int:
    """Fixed parameters per output of a Dense: bias and scale."""
    return ("bias" in proc.vars) + ("scale" in proc.vars)


def _split_dense(proc, M: int, wb: float, rates: dict[str, float]) -> tuple[str, int]:
    out, inp = proc.shape
    per_out, ww, acc = per_output_params(proc), weight_bytes(proc, wb), 2 * int(proc.accumulates)

    def fits_outputs(n):
        rows = math.ceil(out / n)
        return _nbytes(rows * inp, ww) + _nbytes(rows * per_out + inp + rows + acc * rows, wb) <= M

    def fits_inputs(n):
        cols = math.ceil(inp / n)
        return _nbytes(cols * out, ww) + _nbytes(out * per_out + cols + out + acc * out, wb) <= M

    options = {}
    # a delta receiver's output is the sum over tokens: cut by inputs, every shard's kept partial sums would have to
    # travel every token, events or not; it is cut by outputs only
    splits = (("outputs", fits_outputs, out),) + ((("inputs", fits_inputs, inp),) if not acc else ())
    for split, fits, axis in splits:
        n = max(1, math.ceil(_nbytes(out * inp, ww) / M))
        while n <= axis and not fits(n):
            n += 1
        if n <= axis:
            options[split] = n
    if not options:
        raise MappingError(f"{proc.name} ({out}x{inp}) cannot be cut into core-sized shards: one row or column with its "
                           f"buffers exceeds the core's {M:,} bytes; use a topology with more memory per core")
    e_in, e_out = _input_rate(proc, rates), rates[proc.out_ports["out"].path]
    traffic = {"outputs": e_in * options.get("outputs", 0) + e_out, "inputs": e_in + options.get("inputs", 0) * out}
    split = min(options, key=lambda s: (traffic[s], s != "outputs"))
    return split, options[split]


def _fill_hint(fill: float) -> str:
    return "" if fill >= 1.0 else f" or a larger `fill` (now {fill:g} of each core's memory)"


def partition(graph: ProcessGraph, topology: Topology, fill: float = 1.0) -> list[Shard]:
    """Every process as one or more shards of at most `fill` of a core's memory, in the graph's data-flow order."""
    M, wb = int(topology.core.memory_bytes * fill), topology.core.word_bytes
    rates = port_rates(graph)
    shards: list[Shard] = []
    for proc in graph.topological_order():
        ww = weight_bytes(proc, wb)
        weights = sum(v.value.size for v in proc.vars.values() if v.role == "weight")
        params = proc.n_parameters() - weights
        state = sum(v.value.size * v.words for v in proc.vars.values() if v.role == "state")
        io = sum(p.size for p in proc.in_ports.values() if p.name != "token") + sum(p.size for p in proc.out_ports.values())
        whole = _nbytes(weights, ww) + _nbytes(params, wb) + _nbytes(state, wb) + _nbytes(io, wb)

        def add(split, part, parts, lo, hi, axis, weight_el, param_el, state_el, io_el):
            shards.append(Shard(len(shards), proc.name, proc.kind, proc.layer, split, part, parts, lo, hi, axis,
                                _nbytes(weight_el, ww) + _nbytes(param_el, wb), _nbytes(state_el, wb), _nbytes(io_el, wb)))

        how = model_class_for(proc).split  # the process model says how its process may be cut
        if whole <= M and how != "rows":
            add("whole", 0, 1, 0, 1, 1, weights, params, state, io)
            continue
        if how == "dense":
            split, n = _split_dense(proc, M, wb, rates)
            out, inp = proc.shape
            axis = out if split == "outputs" else inp
            bounds = np.linspace(0, axis, n + 1).round().astype(int)
            per_out = per_output_params(proc)  # bias and scale: with the rows they serve, or on the first input shard
            for k in range(n):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                acc = 2 * int(proc.accumulates)  # a delta receiver keeps the sums of its outputs (32-bit: two words each)
                if split == "outputs":
                    add(split, k, n, lo, hi, axis, (hi - lo) * inp, (hi - lo) * per_out, acc * (hi - lo), inp + hi - lo)
                else:
                    add(split, k, n, lo, hi, axis, (hi - lo) * out, out * per_out if k == 0 else 0, acc * out, hi - lo + out)
        elif how == "rows":
            tables = [v.value for n, v in proc.vars.items() if v.role == "weight"]
            rows, d = sum(t.shape[0] for t in tables), tables[0].shape[1]
            scaled = "scale" in proc.vars  # an integer table: one scale per row, at the word width
            per = max(1, (M - _nbytes(d + 1 + state, wb)) // max(1, _nbytes(d, ww) + (_nbytes(1, wb) if scaled else 0)))
            n = 1 if whole <= M else math.ceil(rows / per)
            bounds = np.linspace(0, rows, n + 1).round().astype(int)
            for k in range(n):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                add("rows", k, n, lo, hi, rows, (hi - lo) * d, (hi - lo) if scaled else 0, state if k == 0 else 0, d)
        elif how == "heads":  # state, weights and parameters per head (attention's cache; RWKV-7's per-head kinds)
            heads = proc.attrs["n_head"]
            per_head, w_head, p_head = state // heads, weights // heads, params // heads
            n = next((n for n in range(1, heads + 1) if heads % n == 0 and _nbytes(w_head * heads // n, ww)
                      + _nbytes((per_head + p_head) * heads // n, wb) + _nbytes(io // n + 1, wb) <= M), None)
            if n is None:
                raise MappingError(f"{proc.name}: one head's state and parameters ({_nbytes(per_head + p_head, wb):,} bytes) "
                                   f"do not fit a core's {M:,} bytes; use a topology with more memory per core{_fill_hint(fill)}")
            for k in range(n):
                lo, hi = k * heads // n, (k + 1) * heads // n
                first = k == 0  # what does not divide by heads stays with the first group
                add("heads", k, n, lo, hi, heads, w_head * (hi - lo), p_head * (hi - lo) + (params - p_head * heads if first else 0),
                    per_head * (hi - lo) + (state - per_head * heads if first else 0), io // n)
        else:
            raise MappingError(f"{proc.name} ({proc.kind}) needs {whole:,} bytes but a {topology.name} core has {M:,}; "
                               f"use a topology with more memory per core{_fill_hint(fill)}")
    return shards


def shard_traffic(graph: ProcessGraph, shards: list[Shard]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected events per token from shard to shard: arrays (src shard ids, dst shard ids, events)."""
    rates = port_rates(graph)
    by_proc: dict[str, list[Shard]] = {}
    for s in shards:
        by_proc.setdefault(s.process, []).append(s)
    src_ids, dst_ids, traffic = [], [], []
    for c in graph.connections():
        r = rates[c.src.path]
        for s in by_proc[c.src.process.name]:
            sent = float(c.src.size) if s.split == "inputs" else r * s.fraction  # partial sums are dense
            if sent <= 0:
                continue
            for d in by_proc[c.dst.process.name]:
                # an input-split Dense and an attention head group take only their slice of the input vector
                frac = d.fraction if d.split in ("inputs", "heads") else 1.0
                src_ids.append(s.id)
                dst_ids.append(d.id)
                traffic.append(sent * frac)
    return np.array(src_ids, dtype=np.int64), np.array(dst_ids, dtype=np.int64), np.array(traffic, dtype=np.float64)


def pack(shards: list[Shard], memory_bytes: int) -> list[list[int]]:
    """Shards into core-sized bins, next-fit in data-flow order (neighbours share a core)."""
    bins: list[list[int]] = []
    free = -1
    for s in shards:
        if s.memory_bytes > free:
            bins.append([])
            free = memory_bytes
        bins[-1].append(s.id)
        free -= s.memory_bytes
    return bins
