"""The reference executor: runs a process graph token by token and counts the events each process handles.

Per token, every process runs once in dependency order (one algorithmic time step); the state (held by the
executor's process models, not by the graph) carries over to the next token. Each process is vectorised with numpy (its process model); events are the non-zero entries
of the vectors on the connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.core import OutPort
from eventllm.process.graph import ProcessGraph
from eventllm.process.models import model_for

COUNTERS = ("events_in", "events_out", "synops", "neuron_ops")


@dataclass
class EventCounts:
    """Per-process totals over the tokens run so far.

    events_in   non-zero entries arriving at the process's in-ports
    events_out  non-zero entries leaving its out-ports (one per entry, however many targets it fans out to)
    synops      Dense only: input events × fan-out (the multiply-accumulates an event-driven core performs)
    neuron_ops  other processes: output entries computed
    """

    tokens: int = 0
    per_process: dict[str, dict[str, int]] = field(default_factory=dict)
    per_port: dict[str, int] = field(default_factory=dict)  # events sent by each out-port ('proc.port')

    def total(self, counter: str, kind: str | None = None, graph: ProcessGraph | None = None) -> int:
        return sum(c[counter] for name, c in self.per_process.items() if kind is None or graph[name].kind == kind)


class Executor:
    """Runs `graph` one token at a time.

    >>> ex = Executor(graph)                 # doctest: +SKIP
    >>> logits = ex.run([10, 11, 12])        # [3, vocab]
    >>> ex.counts.per_process["L0.att.key.threshold"]["events_out"]
    """

    def __init__(self, graph: ProcessGraph, probes: list[str] = (), overrides: dict[str, float] | None = None):
        self.graph = graph
        self.order = graph.topological_order()
        # the executor owns the run state; `overrides` (e.g. {"theta": 0}) replace Var values for this run only
        self.models = {p.name: model_for(p, overrides) for p in self.order}
        self.inputs = {port.path for port in graph.inputs()}
        self.probes = {path: [] for path in probes}
        for path in probes:
            if not isinstance(graph.port(path), OutPort):
                raise GraphError(f"probe {path}: probes watch out-ports; name the out-port that feeds it")
        self.reset()

    def reset(self) -> None:
        """Start a new sequence: every model's state back to its initial value, counters and probes cleared."""
        for m in self.models.values():
            m.reset()
        self.counts = EventCounts(0, {p.name: dict.fromkeys(COUNTERS, 0) for p in self.graph},
                                  {port.path: 0 for p in self.graph for port in p.out_ports.values()})
        for values in self.probes.values():
            values.clear()

    def step(self, token: int, external: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Run one token; returns the output vector (the logits). `external` feeds cut in-ports ('proc.port')."""
        values: dict[str, np.ndarray] = {}
        token_vec = np.array([token], dtype=np.int64)
        for proc in self.order:
            inputs = process_inputs(proc, values, token_vec, self.inputs, external)
            outputs = self.models[proc.name].run(inputs)
            c = self.counts.per_process[proc.name]
            if self.models[proc.name].synaptic:
                nnz = int(np.count_nonzero(inputs["inp"]))
                c["events_in"] += nnz
                c["synops"] += nnz * proc.out_ports["out"].size
            else:
                c["events_in"] += sum(int(np.count_nonzero(x)) for k, x in inputs.items() if k != "token")
                c["neuron_ops"] += sum(y.size for y in outputs.values())
            for pname, y in outputs.items():
                nnz = int(np.count_nonzero(y))
                c["events_out"] += nnz
                self.counts.per_port[f"{proc.name}.{pname}"] += nnz
                values[f"{proc.name}.{pname}"] = y
        self.counts.tokens += 1
        for path, recorded in self.probes.items():
            recorded.append(values[path].copy())
        return values[self.graph.output]

    def run(self, tokens, external: list[dict[str, np.ndarray]] | None = None) -> np.ndarray:
        """Run a sequence of tokens from the current state; returns the outputs stacked [T, n]."""
        outs = [self.step(int(t), external[i] if external else None) for i, t in enumerate(tokens)]
        return np.stack(outs)

    def probed(self, path: str) -> np.ndarray:
        """The values a probed port carried, one row per token."""
        return np.stack(self.probes[path])



def process_inputs(proc, values: dict[str, np.ndarray], token_vec: np.ndarray, cut: set[str],
                   external: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The vectors arriving at `proc`'s in-ports in this token, by port name: what the feeding out-port sent
    (`values`, keyed 'proc.port'), or — for an in-port fed from outside the graph (its path in `cut`) — the
    value given in `external`, or the token itself for a `token` port."""
    inputs = {}
    for pname, port in proc.in_ports.items():
        if port.path in cut:
            if external is not None and port.path in external:
                inputs[pname] = np.asarray(external[port.path], dtype=np.float32)
            elif pname == "token":
                inputs[pname] = token_vec
            else:
                raise GraphError(f"in-port {port.path} is not connected; connect it or pass it in `external`")
        else:
            inputs[pname] = values[port.sources[0].src.path]
    return inputs


def measure_event_rates(graph: ProcessGraph, tokens: list[int]) -> dict:
    """Run `tokens` from a fresh state and return the mean events per token of every process.

    The result goes into `graph.meta["event_rates"]`, where the mapper reads the expected traffic.
    """
    if len(tokens) == 0:
        raise GraphError("measuring event rates needs at least one token")
    ex = Executor(graph)
    ex.run(tokens)
    n = ex.counts.tokens
    rates = {
        "tokens": n,
        "events_out": {name: c["events_out"] / n for name, c in ex.counts.per_process.items()},
        "ports": {path: e / n for path, e in ex.counts.per_port.items()},
        "synops": {name: c["synops"] / n for name, c in ex.counts.per_process.items() if ex.models[name].synaptic},
    }
    return rates
