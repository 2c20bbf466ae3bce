"""A process graph: the processes of a model and their connections, in one object.

The graph is what `eventllm build` writes and what the mapper, the simulator and the Lava bridge read.
Within one token the processes run in dependency order (the graph is acyclic; recurrence lives in state
Vars). A graph saves to a folder — `graph.json` (structure) and `arrays.npz` (every Var) — and loads back
bit-exactly.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from eventllm.config import read_json
from eventllm.errors import GraphError
from eventllm.limits import check_memory
from eventllm.process.core import Connection, InPort, OutPort, Process
from eventllm.process.library import KINDS
from eventllm.process import rwkv7 as _rwkv7_kinds  # noqa: F401  (its kinds register in KINDS)

FORMAT = "eventllm-graph"
VERSION = 1


class ProcessGraph:
    """Processes (in insertion order) plus the connections between their ports.

    `output` names the out-port whose vector is the model output (the logits), e.g. "head.out". In-ports
    named `token` are the graph's inputs; every other in-port must be connected.
    """

    def __init__(self, processes: list[Process], output: str, meta: dict | None = None):
        self.processes: dict[str, Process] = {}
        for p in processes:
            if p.name in self.processes:
                raise GraphError(f"two processes are named {p.name!r}; process names must be unique")
            self.processes[p.name] = p
        self.output = output
        self.meta = dict(meta or {})
        self.output_port()  # checks the name
        self._order: list[Process] | None = None
        self._check_delta_pairs()

    def _check_delta_pairs(self) -> None:
        """A delta-event site must feed accumulating Dense processes, and an accumulating Dense must be fed by one:
        either alone would compute W·(change) or sum values over tokens, wrong numbers without an error."""
        for p in self:
            if p.kind == "threshold" and "delta" in p.attrs:
                for c in p.out_ports["out"].targets:
                    d = c.dst.process
                    if d.name in self.processes and not (d.kind == "dense" and d.attrs.get("accumulate")):
                        raise GraphError(f"{p.name} sends delta events to {d.name}, which does not keep its summed output; "
                                         "turn delta events on with ProcessGraph.with_delta_events")
            elif p.kind == "dense" and p.attrs.get("accumulate"):
                port = p.in_ports["inp"]
                src = port.sources[0].src.process if port.sources else None
                if src is None or src.kind != "threshold" or "delta" not in src.attrs:
                    raise GraphError(f"{p.name} keeps a summed output but is not fed by a delta-event site; "
                                     "turn delta events on with ProcessGraph.with_delta_events")

    # --- access -----------------------------------------------------------------------------------------
    def __iter__(self):
        return iter(self.processes.values())

    def __len__(self) -> int:
        return len(self.processes)

    def __getitem__(self, name: str) -> Process:
        try:
            return self.processes[name]
        except KeyError:
            raise GraphError(f"the graph has no process {name!r}") from None

    def port(self, path: str) -> InPort | OutPort:
        """The port named 'process.port' (process names may contain dots; the port name is the last part)."""
        proc, _, port = path.rpartition(".")
        p = self[proc]
        found = p.out_ports.get(port) or p.in_ports.get(port)
        if found is None:
            raise GraphError(f"process {proc!r} has no port {port!r} (ports: {', '.join([*p.in_ports, *p.out_ports])})")
        return found

    def output_port(self) -> OutPort:
        port = self.port(self.output)
        if not isinstance(port, OutPort):
            raise GraphError(f"the graph output {self.output!r} must be an out-port")
        return port

    def connections(self) -> list[Connection]:
        return [c for p in self for port in p.out_ports.values() for c in port.targets if c.dst.process.name in self.processes]

    def inputs(self) -> list[InPort]:
        """The in-ports fed from outside the graph (token inputs, or cut edges of a subgraph)."""
        return [port for p in self for port in p.in_ports.values()
                if not any(c.src.process.name in self.processes for c in port.sources)]

    # --- order ------------------------------------------------------------------------------------------
    def topological_order(self) -> list[Process]:
        """The processes in an order where every process comes after those that feed it (Kahn's algorithm)."""
        if self._order is not None:
            return self._order
        indegree = {name: 0 for name in self.processes}
        children: dict[str, list[str]] = {name: [] for name in self.processes}
        for c in self.connections():
            indegree[c.dst.process.name] += 1
            children[c.src.process.name].append(c.dst.process.name)
        ready = [n for n, d in indegree.items() if d == 0]
        order = []
        while ready:
            name = ready.pop(0)
            order.append(self.processes[name])
            for child in children[name]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self.processes):
            stuck = sorted(n for n, d in indegree.items() if d > 0)
            raise GraphError(f"the graph has a cycle through {', '.join(stuck[:5])}: within one token the graph must be "
                             "acyclic; carry values across tokens in a state Var instead")
        self._order = order
        return order

    def layers(self) -> list[int]:
        return sorted({p.layer for p in self if p.layer is not None})

    # --- sizes ------------------------------------------------------------------------------------------
    def n_parameters(self) -> int:
        return sum(p.n_parameters() for p in self)

    def nbytes(self, role: str | None = None) -> int:
        return sum(p.nbytes(role) for p in self)

    def dense_synops_per_token(self) -> int:
        """Synaptic operations of one token if every input were an event (the dense cost)."""
        return sum(int(np.prod(p.vars["weights"].value.shape)) for p in self if p.kind == "dense")

    def summary_rows(self) -> list[list]:
        """One row per process kind: count, parameters, state bytes."""
        kinds = Counter(p.kind for p in self)
        rows = []
        for kind in kinds:
            procs = [p for p in self if p.kind == kind]
            rows.append([kind, kinds[kind], f"{sum(p.n_parameters() for p in procs):,}", f"{sum(p.nbytes('state') for p in procs):,}"])
        return rows

    def precision(self) -> dict:
        """Weight bits of the integer weights (Dense processes, embedding tables) and event bits of the threshold
        sites (16: the trained model's)."""
        low = [p for p in self if p.attrs.get("weight_bits", 16) < 16]
        events = [p.attrs.get("event_bits", 16) for p in self if p.kind == "threshold"]
        return {"weight_bits": min((p.attrs["weight_bits"] for p in low), default=16), "event_bits": min(events, default=16),
                "low_bit_projections": sorted({p.attrs.get("projection") or p.name for p in low})}

    def at_full_precision(self) -> "ProcessGraph":
        """This graph with 16-bit weights (Q · scale in float, the scale per output or per table row) and float
        events: the baseline a low-bit graph is compared with (itself when it has no low-bit part)."""
        p = self.precision()
        if p["weight_bits"] == 16 and p["event_bits"] == 16:
            return self
        g = self.to_networkx()
        for _, data in g.nodes(data=True):
            if "scale" in data["vars"]:
                v = dict(data["vars"])
                v["weights"] = v["weights"].astype(np.float32) * v.pop("scale")[:, None]
                data["vars"] = v
                data["roles"] = {k: r for k, r in data["roles"].items() if k in v}
                data["attrs"] = {**data["attrs"], "weight_bits": 16}
            elif data["kind"] == "threshold":
                data["attrs"] = {**data["attrs"], "event_bits": 16}
        out = ProcessGraph.from_networkx(g)
        out.meta = {k: v for k, v in self.meta.items() if k != "event_rates"} | {"precision": {"weight_bits": 16, "event_bits": 16}}
        return out

    def delta_sites(self) -> dict[str, float]:
        """θ_Δ of every threshold site that sends delta events, by process name."""
        return {p.name: p.attrs["delta"] for p in self if p.kind == "threshold" and "delta" in p.attrs}

    def with_delta_events(self, theta_delta: float | None, projections=None) -> "ProcessGraph":
        """This graph with delta events (see `Threshold`) at the threshold sites of `projections` (all when None),
        their Dense receivers accumulating; `theta_delta=None` turns delta events off everywhere.

        >>> g = graph.with_delta_events(0.0)                    # doctest: +SKIP
        >>> sorted(g.delta_sites().values())[:1]                # doctest: +SKIP
        [0.0]
        """
        if theta_delta is not None and not (isinstance(theta_delta, (int, float)) and theta_delta >= 0):
            raise GraphError(f"the delta threshold θ_Δ must be a non-negative number, got {theta_delta!r}")
        sites = [p for p in self if p.kind == "threshold"]
        if projections is not None:
            known = {p.attrs.get("projection") for p in sites}
            unknown = sorted(set(projections) - known)
            if unknown:
                raise GraphError(f"no threshold site feeds projection {unknown[0]!r}; the graph's sites feed "
                                 f"{', '.join(sorted(k for k in known if k))}")
            sites = [p for p in sites if p.attrs.get("projection") in set(projections)]
        chosen = {p.name for p in sites} if theta_delta is not None else set()
        g = self.to_networkx()
        for name, data in g.nodes(data=True):
            if data["kind"] != "threshold":
                continue
            on = name in chosen
            receivers = [dst for _, dst in g.out_edges(name)]
            other = next((r for r in receivers if g.nodes[r]["kind"] != "dense"), None)
            if on and other is not None:
                raise GraphError(f"{name} feeds {other} (a {g.nodes[other]['kind']}); delta events need Dense receivers")
            for node, key, attr, value, size in [(name, "sent", "delta", float(theta_delta) if on else None, data["in_ports"]["inp"])] + \
                    [(r, "acc", "accumulate", True if on else None, g.nodes[r]["out_ports"]["out"]) for r in receivers]:
                d = g.nodes[node]
                attrs = {k: v for k, v in d["attrs"].items() if k != attr}
                vars_ = {k: v for k, v in d["vars"].items() if k != key}
                roles = {k: v for k, v in d["roles"].items() if k != key}
                if value is not None:
                    attrs[attr], vars_[key], roles[key] = value, np.zeros(size), "state"
                d["attrs"], d["vars"], d["roles"] = attrs, vars_, roles
        out = ProcessGraph.from_networkx(g)
        out.meta = {k: v for k, v in self.meta.items() if k != "event_rates"}
        return out

    def plain(self) -> "ProcessGraph":
        """The graph of the dense baseline: 16-bit weights, float events, no delta events, one θ per site (itself
        when it is all that)."""
        full = self.at_full_precision()
        full = full.with_delta_events(None) if full.delta_sites() else full
        if not any(p.kind == "threshold" and p.vars["theta"].value.ndim for p in full):
            return full
        g = full.to_networkx()  # per-neuron θ: the baseline reads no θ vector (its θ is 0 anyway)
        for _, data in g.nodes(data=True):
            if data["kind"] == "threshold" and "score_theta" in data["attrs"]:
                data["vars"] = {**data["vars"], "theta": np.float32(data["attrs"]["score_theta"])}
                data["attrs"] = {k: v for k, v in data["attrs"].items() if k != "score_theta"}
        out = ProcessGraph.from_networkx(g)
        out.meta = dict(full.meta)
        return out

    # --- interchange ------------------------------------------------------------------------------------
    def to_networkx(self):
        """A networkx.MultiDiGraph: nodes are processes (kind, layer, attrs, vars, ports), edges connections.

        Edge keys are 'src_port->dst_port'; each edge carries `src_port`, `dst_port` and `size`. The node's
        `vars` attribute holds the arrays themselves (not copies), so `from_networkx` rebuilds the graph.

        >>> g = graph.to_networkx()                               # doctest: +SKIP
        >>> g.nodes["L0.att.key"]["kind"], g.number_of_edges()    # doctest: +SKIP
        ('dense', 42)
        """
        import networkx as nx

        g = nx.MultiDiGraph(output=self.output, meta=dict(self.meta))
        for p in self:
            g.add_node(p.name, kind=p.kind, layer=p.layer, attrs=dict(p.attrs),
                       vars={n: v.value for n, v in p.vars.items()}, roles={n: v.role for n, v in p.vars.items()},
                       in_ports={n: port.size for n, port in p.in_ports.items()},
                       out_ports={n: port.size for n, port in p.out_ports.items()},
                       parameters=p.n_parameters(), weight_bytes=p.nbytes("weight") + p.nbytes("param"),
                       state_bytes=p.nbytes("state"))
        for c in self.connections():
            g.add_edge(c.src.process.name, c.dst.process.name, key=f"{c.src.name}->{c.dst.name}",
                       src_port=c.src.name, dst_port=c.dst.name, size=c.src.size)
        return g

    @classmethod
    def from_networkx(cls, g) -> "ProcessGraph":
        """Rebuild a graph from `to_networkx`'s output (arrays copied)."""
        procs = {}
        for name, data in g.nodes(data=True):
            procs[name] = _rebuild(name, data["kind"], data["layer"], data["attrs"], data["vars"], data["roles"])
        for src, dst, data in g.edges(data=True):
            getattr(procs[src], data["src_port"]).connect(getattr(procs[dst], data["dst_port"]))
        return cls(list(procs.values()), g.graph["output"], g.graph.get("meta"))

    def structure(self) -> dict:
        """Everything but the arrays: processes (kind, layer, attrs, Var shapes and roles) and connections."""
        return {
            "format": FORMAT, "version": VERSION, "output": self.output, "meta": self.meta,
            "processes": [
                {"name": p.name, "kind": p.kind, "layer": p.layer, "attrs": p.attrs,
                 "vars": {n: {"shape": list(v.shape), "dtype": str(v.value.dtype), "role": v.role} for n, v in p.vars.items()}}
                for p in self
            ],
            "connections": [[c.src.path, c.dst.path] for c in self.connections()],
        }

    def save(self, folder: str | Path) -> Path:
        """Write `graph.json` and `arrays.npz` (every Var, state included) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"{p.name}/{n}": v.value for p in self for n, v in p.vars.items()}
        np.savez(folder / "arrays.npz", **arrays)
        (folder / "graph.json").write_text(json.dumps(self.structure(), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ProcessGraph":
        """Read a graph folder written by `save`; clear errors for another format/version or missing arrays."""
        folder = Path(folder)
        meta_file, arrays_file = folder / "graph.json", folder / "arrays.npz"
        if not folder.is_dir():
            raise GraphError(f"{folder} is not a graph folder; build one with `eventllm build --model M -o {folder}`")
        for f in (meta_file, arrays_file):
            if not f.is_file():
                raise GraphError(f"{folder} has no {f.name}; it is not a complete graph folder (rebuild it with `eventllm build`)")
        s = _read_structure(meta_file)
        try:
            with zipfile.ZipFile(arrays_file) as z:  # np.savez stores uncompressed: the sizes are the arrays' bytes
                check_memory(sum(i.file_size for i in z.infolist()), f"the arrays of {arrays_file}", "rebuild the graph",
                             GraphError)
            npz = np.load(arrays_file, allow_pickle=False)
            arrays = {k: npz[k] for k in npz.files}
        except GraphError:
            raise
        except Exception as e:  # a truncated or corrupt zip raises several kinds of errors
            raise GraphError(f"{arrays_file} cannot be read ({type(e).__name__}: {e}); rebuild the graph") from None
        try:
            return cls._from_structure(s, arrays, arrays_file)
        except GraphError as e:  # name the file when the message does not
            if str(folder) in str(e):
                raise
            raise GraphError(f"{meta_file}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise GraphError(f"{meta_file}: malformed graph structure ({type(e).__name__}: {e}); "
                             "rebuild the graph with `eventllm build`") from None

    @classmethod
    def _from_structure(cls, s: dict, arrays: dict, arrays_file: Path) -> "ProcessGraph":
        procs = {}
        for spec in s["processes"]:
            values, roles = {}, {}
            for n, info in spec["vars"].items():
                key = f"{spec['name']}/{n}"
                if key not in arrays:
                    raise GraphError(f"{arrays_file} has no array {key!r}; the folder is incomplete, rebuild the graph")
                if list(arrays[key].shape) != info["shape"]:
                    raise GraphError(f"{arrays_file}: {key} has shape {list(arrays[key].shape)}, graph.json says {info['shape']}")
                values[n], roles[n] = arrays[key], info["role"]
            procs[spec["name"]] = _rebuild(spec["name"], spec["kind"], spec["layer"], spec["attrs"], values, roles)
        for src, dst in s["connections"]:
            sp, _, sport = src.rpartition(".")
            dp, _, dport = dst.rpartition(".")
            if sp not in procs or dp not in procs:
                raise GraphError(f"connection {src} -> {dst} names an unknown process")
            if sport not in procs[sp].out_ports or dport not in procs[dp].in_ports:
                raise GraphError(f"connection {src} -> {dst} names an unknown port")
            procs[sp].out_ports[sport].connect(procs[dp].in_ports[dport])
        return cls(list(procs.values()), s["output"], s.get("meta"))


_STRUCTURE = {"format": str, "version": int, "output": str, "meta": dict, "processes": list, "connections": list}


def _read_structure(meta_file: Path) -> dict:
    """graph.json's content, checked for its keys and their types (the processes are checked as they are rebuilt)."""
    s = read_json(meta_file, "graph file", "rebuild the graph with `eventllm build`", GraphError)
    if not isinstance(s, dict) or s.get("format") != FORMAT:
        raise GraphError(f"{meta_file} is not an eventllm graph (format {s.get('format') if isinstance(s, dict) else None!r})")
    if s.get("version") != VERSION:
        raise GraphError(f"{meta_file.parent} was written by graph format version {s.get('version')}; this eventllm reads version "
                         f"{VERSION}: rebuild it with this version's `eventllm build`")
    for key, kind in _STRUCTURE.items():
        if key not in s:
            raise GraphError(f"{meta_file}: missing key {key!r}; rebuild the graph with `eventllm build`")
        if not isinstance(s[key], kind):
            raise GraphError(f"{meta_file}: {key!r} must be a {kind.__name__}, got {type(s[key]).__name__}; rebuild the graph")
    unknown = sorted(set(s) - set(_STRUCTURE))
    if unknown:
        raise GraphError(f"{meta_file}: unknown key {unknown[0]!r}; a graph.json has {', '.join(_STRUCTURE)}")
    return s


def is_graph_folder(folder: str | Path) -> bool:
    """True when `folder` holds a graph.json of this format (a folder `eventllm build` may overwrite)."""
    try:
        s = json.loads((Path(folder) / "graph.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(s, dict) and s.get("format") == FORMAT


def check_graph_output(folder: str | Path, force: bool = False) -> None:
    """Refuse to replace a non-empty folder that is not a graph folder (unless `force`): it may hold other work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GraphError(f"{folder} is a file; `eventllm build -o` writes a folder: choose another name")
    if not force and folder.is_dir() and any(folder.iterdir()) and not is_graph_folder(folder):
        raise GraphError(f"{folder} is a non-empty folder that is not an eventllm graph; choose an empty or new folder, "
                         "or pass `force` to replace it")


def _rebuild(name: str, kind: str, layer, attrs: dict, values: dict, roles: dict) -> Process:
    if kind not in KINDS:
        raise GraphError(f"process {name!r} has unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    fixed = {n: v for n, v in values.items() if roles[n] != "state"}
    proc = KINDS[kind](name, layer=layer, **attrs, **fixed)
    for n, v in values.items():
        if roles[n] == "state":
            proc.vars[n].value[...] = v
        elif not np.array_equal(proc.vars[n].value, v):  # guards against a constructor that transforms its input
            raise GraphError(f"{name}.{n} did not round-trip")
    return proc
