"""The trace engine: the message engine's counters, energy and latency for many tokens at once, from event masks.

Every counter of `sim.engine.Simulator` depends only on which entries of the graph's out-ports are non-zero
(plus, for the table lookups and attention, the token and its position in the sequence) and on the mapping.
So a block of T tokens is counted with arrays [T, …] instead of a Python loop per token:

  masks        for each out-port ('proc.port') a [T, size] array whose non-zero entries are the events; the
               torch model in sequence mode gives them for the threshold sites and their inputs
               (`eventllm.masks`); an embedding's out-port is looked up here from the graph's
               own table; an out-port not given is dense (every entry an event), except at a token where
               one of its process's `quiet_inputs` sent no event (a Dense after a site whose θ removed the
               whole vector) or while its zero start state stays zero (`quiet_state_inputs`, a WKV state never
               fed): then only its bias's non-zero entries;
  ranges       every range the engine counts (a shard's inputs and outputs, a NoC pair, a threshold's
               out-port) starts and ends on one of a few boundary points of the vector of all out-ports laid
               end to end, so per token only the events between consecutive boundary points are summed
               (`np.add.reduceat`), and a range's count is a difference of their prefix sums;
  latency      the same critical path as the message engine, process after process, on [T, shards] arrays.

Fed the masks of the values the message engine computes, the integer counters are equal and energy and latency
equal to rounding (tests/test_trace.py). Numpy only; the masks may come from any device.

>>> eng = TraceEngine(graph, mapping, load_costs("seneca"))           # doctest: +SKIP
>>> eng.add(tokens, masks)            # any number of tokens, chunk after chunk; eng.new_sequence() between texts
>>> summarize(eng)["energy_per_token_j"]
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.graph import ProcessGraph
from mapping.result import Mapping
from sim.costs import CostModel
from eventllm.process.library import Attention, Embedding, PositionalEmbedding
from eventllm.process.models import model_class_for
from sim.engine import COUNTERS, C, SimResult, Simulator

# at most this many [token x shard x counter] entries per block (float64): bounds the memory of one block
BLOCK_ENTRIES = 1 << 23


class _Groups:
    """Sums (or maxima) of the columns of a [T, n] array by group, without a loop: columns sorted by group once."""

    def __init__(self, groups: np.ndarray, n_groups: int):
        self.order = np.argsort(groups, kind="stable")
        self.uniq, self.starts = np.unique(groups[self.order], return_index=True)
        self.n = n_groups

    def sum(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], self.n), dtype=values.dtype)
        if len(self.order):
            out[:, self.uniq] = np.add.reduceat(values[:, self.order], self.starts, axis=1)
        return out


class TraceEngine(Simulator):
    """Counts like `Simulator` (same planning, same `result`, so `sim.report.summarize` reads it) from masks.

    `add(tokens, masks)` counts a block of tokens that continue the current sequence; `new_sequence()` starts a
    new one (positions from 0, as a fresh executor) while the totals keep accumulating.
    """

    def __init__(self, graph: ProcessGraph, mapping: Mapping, costs: CostModel, event_driven: bool = True,
                 overrides: dict[str, float] | None = None):
        if graph.delta_sites():  # the masks come from the torch model, which sends values, not changes
            raise GraphError("the trace engine counts from the torch model's masks, which has no delta events; "
                             "simulate a graph with delta events with `engine` message")
        super().__init__(graph, mapping, costs, event_driven, overrides)
        self._plan_trace()
        self.position = 0
        self.recorded: list[tuple[np.ndarray, np.ndarray]] = []
        self._record = None

    def record(self, shards) -> np.ndarray:
        """From now on keep, per token, the counters of `shards` and the packets of every NoC pair into them
        (`recorded`: a list of ([T, len(shards), counters], [T, pairs]) blocks); returns those pairs' indices."""
        shards = np.asarray(shards, dtype=np.int64)
        pairs = np.flatnonzero(np.isin(self.p_dst, shards))
        self._record = (shards, pairs)
        return pairs

    def reset(self) -> None:
        super().reset()
        self.new_sequence()

    def new_sequence(self) -> None:
        self.position = 0
        self.state_moved: set[str] = set()  # processes whose state (zero at a sequence's start) has taken a value

    # --- planning -----------------------------------------------------------------------------------------
    def _plan_trace(self) -> None:
        ports = list(self.port_offset.items())
        thr = self.threshold_ranges.ravel()
        points = np.unique(np.concatenate([[off for _, off in ports], [self.vector_size], self.in_lo, self.in_hi,
                                           self.out_a, self.out_b, self.p_lo, self.p_hi, thr]).astype(np.int64))
        self.points = points
        self.interval_len = np.diff(points)
        # the intervals inside each out-port: [first, last) of the interval list, and their starts in the port
        self.port_intervals: dict[str, tuple[int, int, np.ndarray]] = {}
        sizes = {p.path: p.size for proc in self.order for p in proc.out_ports.values()}
        for path, off in ports:
            i0, i1 = np.searchsorted(points, [off, off + sizes[path]])
            self.port_intervals[path] = (int(i0), int(i1), points[i0:i1] - off)
        at = lambda x: np.searchsorted(points, x)  # noqa: E731  (every range end is a boundary point)
        self.ix_in = at(self.in_lo), at(self.in_hi)
        self.ix_out = at(self.out_a), at(self.out_b)
        self.ix_pair = at(self.p_lo), at(self.p_hi)
        self.ix_thr = at(self.threshold_ranges[:, 0]), at(self.threshold_ranges[:, 1])
        self.in_groups = _Groups(self.in_shard, self.n_shards)
        self.src_groups = _Groups(self.p_src, self.n_shards)
        self.tables = [p for p in self.special if isinstance(p, (Embedding, PositionalEmbedding))]
        self.attentions = [p for p in self.special if isinstance(p, Attention)]
        unknown = [p for p in self.special if p not in self.tables and p not in self.attentions]
        if unknown:  # its counts depend on data the masks do not carry: no silent guess
            raise GraphError(f"the trace engine does not know the data-dependent counts of {unknown[0].name} "
                             f"({type(unknown[0]).__name__}); simulate it with `engine` message")
        # processes whose out-port sends only its bias at a token where one of its `quiet_inputs` sent no event (a
        # Dense after a site whose θ removed the whole vector: W·0 = 0), or while its zero start state stays zero
        # (`quiet_state_inputs`): (name, the sources of each quiet group, of the state inputs, the bias's events
        # per interval of the out-port)
        self.quiet = []
        for p in self.order:
            model = model_class_for(p)
            if (model.quiet_inputs or model.quiet_state_inputs) and set(p.out_ports) == {"out"}:
                i0, i1, starts = self.port_intervals[f"{p.name}.out"]
                bias = p.vars["bias"].value if "bias" in p.vars else np.zeros(p.out_ports["out"].size)
                src = lambda names: [p.in_ports[n].sources[0].src.path for n in names]  # noqa: E731
                groups = [src((g,) if isinstance(g, str) else g) for g in model.quiet_inputs]
                self.quiet.append((p.name, groups, src(model.quiet_state_inputs),
                                   np.add.reduceat(bias != 0, starts, dtype=np.int64)))
        # per process: its pairs sorted by destination shard, for the latest arrival per shard
        self.arrivals = {}
        for p in self.order:
            ids, pairs = self.shards_of[p.name], self.process_pairs[p.name]
            if len(ids) > 1 and len(pairs):
                order = np.argsort(self.p_dst[pairs], kind="stable")
                dst, starts = np.unique(self.p_dst[pairs][order], return_index=True)
                self.arrivals[p.name] = (pairs[order], dst - ids[0], starts)

    # --- masks --------------------------------------------------------------------------------------------
    def _table_mask(self, proc, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The non-zero entries of an embedding's output, looked up as its process model does."""
        table = proc.vars["weights"].value
        if tokens.min() < 0 or tokens.max() >= table.shape[0]:
            raise GraphError(f"{proc.name}: a token id is outside the vocabulary (0..{table.shape[0] - 1})")
        out = table[tokens]
        if isinstance(proc, PositionalEmbedding):
            if positions.max() >= proc.max_positions:
                raise GraphError(f"{proc.name}: the model has {proc.max_positions} positions and this is token "
                                 f"{positions.max() + 1}; cut the text into shorter sequences (segments)")
            out = out + proc.vars["positions"].value[positions + proc.attrs["offset"]]
        return out != 0

    def _interval_counts(self, masks: MappingABC, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Events in every interval between consecutive boundary points, [T, intervals] (the tokens continue the
        sequence: the processes whose state has moved from zero are noted)."""
        T = len(tokens)
        counts = np.broadcast_to(self.interval_len, (T, len(self.interval_len))).copy()
        given = dict(masks)
        for proc in self.tables:
            path = f"{proc.name}.out"
            if path not in given:
                given[path] = self._table_mask(proc, tokens, positions)
        for path, mask in given.items():
            if path not in self.port_intervals:
                raise GraphError(f"mask for {path!r}: the graph has no such out-port")
            i0, i1, starts = self.port_intervals[path]
            mask = np.asarray(mask)
            if mask.shape != (T, self.points[i1] - self.points[i0]):
                raise GraphError(f"mask for {path}: shape {mask.shape}, expected ({T}, {self.points[i1] - self.points[i0]})")
            counts[:, i0:i1] = np.add.reduceat(mask != 0 if mask.dtype != bool else mask, starts, axis=1, dtype=np.int64)
        for name, groups, state_sources, bias_events in self.quiet:  # in graph order: sources are final before
            out = f"{name}.out"
            if out in given:
                continue
            idle = np.zeros(T, dtype=bool)
            for group in groups:
                idle |= np.logical_and.reduce([self._silent(counts, src) for src in group])
            if state_sources and name not in self.state_moved:
                kept_zero = np.zeros(T, dtype=bool)
                for src in state_sources:
                    kept_zero |= self._silent(counts, src)
                kept_zero = np.logical_and.accumulate(kept_zero)  # the state is still zero after token t
                idle |= kept_zero
                if not kept_zero[-1]:
                    self.state_moved.add(name)
            if idle.any():
                i0, i1, _ = self.port_intervals[out]
                counts[idle, i0:i1] = bias_events
        return counts

    def _silent(self, counts: np.ndarray, path: str) -> np.ndarray:
        """[T] bool: the tokens at which out-port `path` sent no event."""
        s0, s1, _ = self.port_intervals[path]
        return counts[:, s0:s1].sum(1) == 0

    # --- counting -----------------------------------------------------------------------------------------
    def add(self, tokens, masks: MappingABC[str, np.ndarray]) -> None:
        """Count `tokens` (continuing the current sequence), whose out-ports carried the non-zero entries of
        `masks` ('proc.port' -> [T, size]); the totals, energy and latency go to `result` as `step` would."""
        tokens = np.asarray(tokens, dtype=np.int64).ravel()
        T = len(tokens)
        if T == 0:
            return
        width = max(self.n_shards * len(COUNTERS), len(self.p_src), len(self.interval_len), 1)
        block = max(1, BLOCK_ENTRIES // width)
        for s in range(0, T, block):
            e = min(T, s + block)
            self._add_block(tokens[s:e], {k: v[s:e] for k, v in masks.items()})

    def _add_block(self, tokens: np.ndarray, masks: MappingABC) -> None:
        T = len(tokens)
        positions = self.position + np.arange(T)
        actual = np.zeros((T, len(self.points)), np.int64)
        np.cumsum(self._interval_counts(masks, tokens, positions), axis=1, out=actual[:, 1:])
        if self.event_driven:
            cum = actual
        else:
            cum = np.broadcast_to(np.concatenate([[0], np.cumsum(self.interval_len)]), actual.shape)

        def events(ix):
            return cum[:, ix[1]] - cum[:, ix[0]]

        counts = np.broadcast_to(self.static, (T, *self.static.shape)).copy()
        ev_in = self.in_groups.sum(events(self.ix_in))
        counts[..., C["events_in"]] = ev_in
        ev_out = events(self.ix_out)
        part = self.partial_shards
        ev_out[:, part] = np.where(ev_in[:, part] > 0, self.out_b[part] - self.out_a[part], 0)
        counts[..., C["events_out"]] = ev_out
        self._synaptic_counts(counts, ev_in)
        for proc in self.tables:
            self._tables(proc, tokens, positions, counts)
        for proc in self.attentions:
            self._attention(proc, positions, counts)
        ev = events(self.ix_pair)
        if self.p_partial.any():
            ev = np.where(self.p_partial, np.where(ev_in[:, self.p_src] > 0, self.p_hi - self.p_lo, 0), ev)
        packets = ev * self.p_messages
        counts[..., C["packets"]] = self.src_groups.sum(packets)
        counts[..., C["hops"]] = self.src_groups.sum(packets * self.p_hops)
        counts[..., C["chip_crossings"]] = self.src_groups.sum(packets * self.p_crossings)
        latency, layer_finish = self._latencies(counts, ev)
        if self._record is not None:
            self.recorded.append((counts[:, self._record[0]].copy(), packets[:, self._record[1]].copy()))
        energy = sum(self.energy_breakdown(counts.sum(1).T, latency).values())
        if len(self.threshold_ranges):
            a, b = self.threshold_ranges[:, 0], self.threshold_ranges[:, 1]
            kept = actual[:, self.ix_thr[1]] - actual[:, self.ix_thr[0]]
            sparsity = np.mean(1 - kept / (b - a), axis=1)
        else:
            sparsity = np.zeros(T)
        r = self.result
        r.tokens += T
        r.counts += counts.sum(0)
        summed = packets.sum(0).astype(np.float64)
        r.pair_packets = summed if r.pair_packets is None else r.pair_packets + summed
        r.energy_per_token.extend(energy.tolist())
        r.latency_per_token.extend(latency.tolist())
        r.layer_finish.extend(layer_finish.tolist())
        r.sparsity_per_token.extend(sparsity.tolist())
        self.position += T

    def _tables(self, proc, tokens: np.ndarray, positions: np.ndarray, counts: np.ndarray) -> None:
        """Embedding lookups, as the embedding models' `extra_counts` for one token: the shards holding the rows read them, the owner of the
        token's row sends."""
        ids = self.shards_of[proc.name]
        lo, hi = self.lo[ids], self.hi[ids]
        d = proc.out_ports["out"].size
        rows = [tokens]
        if isinstance(proc, PositionalEmbedding):
            vocab = proc.vars["weights"].value.shape[0]
            rows.append(vocab + positions + proc.attrs["offset"])
        for row in rows:
            active = (lo <= row[:, None]) & (row[:, None] < hi)
            counts[:, ids, C["weight_reads"]] += self.models[proc.name].row_words(d) * active
        owner = (lo <= tokens[:, None]) & (tokens[:, None] < hi)
        counts[:, ids, C["events_out"]] *= owner
        counts[:, ids, C["neuron_updates"]] += d * owner
        counts[:, ids, C["neuron_ops"]] += self.models[proc.name].entry_ops() * d * owner

    def _attention(self, proc, positions: np.ndarray, counts: np.ndarray) -> None:
        ids = self.shards_of[proc.name]
        a = proc.attrs
        pos = (positions + 1)[:, None]  # cached tokens, this one included
        frac = (self.hi[ids] - self.lo[ids]) / a["n_head"]
        d_part = a["d"] * frac
        counts[:, ids, C["neuron_ops"]] += 2 * pos * d_part + 4 * pos * a["n_head"] * frac
        counts[:, ids, C["neuron_updates"]] += d_part
        counts[:, ids, C["state_reads"]] += 2 * pos * d_part
        counts[:, ids, C["state_writes"]] += 2 * d_part

    def _latencies(self, counts: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The message engine's critical path for every token (`events` [T, pairs] on each pair): latency [T] and layer
        finish times [T, groups]."""
        T = counts.shape[0]
        compute = self._compute_cycles(counts) / self.topo.core.clock_hz
        arrive_delay = np.where(events > 0, self.p_transfer, 0.0)
        finish = np.zeros((T, self.n_shards))
        group_finish = np.zeros((T, len(self.layer_names)))
        for proc in self.order:
            ids = self.shards_of[proc.name]
            pairs = self.process_pairs[proc.name]
            if len(ids) == 1:
                if len(pairs):
                    start = (finish[:, self.p_src[pairs]] + arrive_delay[:, pairs]).max(1)
                    finish[:, ids[0]] = start + compute[:, ids[0]]
                else:
                    finish[:, ids[0]] = 0.0 + compute[:, ids[0]]
                done = finish[:, ids[0]]
            else:
                start = np.zeros((T, len(ids)))
                if proc.name in self.arrivals:
                    sorted_pairs, local, starts = self.arrivals[proc.name]
                    arrive = finish[:, self.p_src[sorted_pairs]] + arrive_delay[:, sorted_pairs]
                    start[:, local] = np.maximum(0.0, np.maximum.reduceat(arrive, starts, axis=1))
                finish[:, ids] = start + compute[:, ids]
                done = finish[:, ids].max(1)
            g = self.group_of_process[proc.name]
            np.maximum(group_finish[:, g], done, out=group_finish[:, g])
        return finish.max(1), np.maximum.accumulate(group_finish, axis=1)



def merge_results(results: list[SimResult]) -> SimResult:
    """One result from the results of consecutive pieces of a text (segments run from a fresh state each):
    counts and NoC pair totals summed, per-token figures one after the other."""
    out = SimResult(counts=np.zeros_like(results[0].counts))
    for r in results:
        out.tokens += r.tokens
        out.counts += r.counts
        if r.pair_packets is not None:
            out.pair_packets = r.pair_packets.copy() if out.pair_packets is None else out.pair_packets + r.pair_packets
        for name in ("energy_per_token", "latency_per_token", "sparsity_per_token", "layer_finish", "logits"):
            getattr(out, name).extend(getattr(r, name))
    return out


__all__ = ["SimResult", "TraceEngine", "merge_results"]
