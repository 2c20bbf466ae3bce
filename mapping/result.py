"""`map_graph`: partition → pack → place → route, and the `Mapping` it returns (saved as JSON)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eventllm.atomic import atomic_path, write_text
from eventllm.config import read_json
from eventllm.errors import MappingError
from eventllm.process.graph import ProcessGraph
from mapping.partition import Shard, pack, partition, shard_traffic
from mapping.place import bin_traffic, hop_traffic, link_loads, place_bisection, place_random, place_sequential
from mapping.topology import Topology, load_topology

FORMAT = "eventllm-mapping"
VERSION = 1
PLACEMENTS = ("bisection", "sequential", "random")


@dataclass
class Mapping:
    """Where every shard of a graph lives and what the NoC carries.

    `shard_core[i]` is the core of shard i; the traffic arrays give expected events per token between shards.
    """

    topology: Topology
    shards: list[Shard]
    shard_core: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    events: np.ndarray
    graph_info: dict = field(default_factory=dict)
    placement: str = "bisection"
    seconds: float = 0.0

    # --- derived figures --------------------------------------------------------------------------------
    @property
    def cores_used(self) -> int:
        return len(np.unique(self.shard_core))

    def core_memory(self) -> np.ndarray:
        mem = np.zeros(self.topology.n_cores, dtype=np.int64)
        np.add.at(mem, self.shard_core, [s.memory_bytes for s in self.shards])
        return mem

    def param_bytes(self) -> int:
        return sum(s.param_bytes for s in self.shards)

    def _core_pairs(self):
        a, b = self.shard_core[self.src], self.shard_core[self.dst]
        keep = a != b
        return a[keep], b[keep], self.events[keep]

    def hop_traffic(self) -> float:
        return hop_traffic(self.shard_core, self.src, self.dst, self.events, self.topology)

    def chip_traffic(self) -> float:
        a, b, t = self._core_pairs()
        return float((t * self.topology.chip_crossings(a, b)).sum()) if len(a) else 0.0

    def link_loads(self) -> dict[tuple[int, int], float]:
        return link_loads(self.shard_core, self.src, self.dst, self.events, self.topology)

    def core_traffic(self) -> np.ndarray:
        """Events per token entering plus leaving each core over the NoC."""
        a, b, t = self._core_pairs()
        out = np.zeros(self.topology.n_cores)
        np.add.at(out, a, t)
        np.add.at(out, b, t)
        return out

    def route(self, i: int) -> list[int]:
        """The cores traffic entry i (shard src[i] → shard dst[i]) passes through."""
        return self.topology.route(int(self.shard_core[self.src[i]]), int(self.shard_core[self.dst[i]]))

    def summary(self) -> dict:
        loads = self.link_loads()
        mem = self.core_memory()
        used = mem[mem > 0]
        return {
            "cores": self.topology.n_cores, "cores_used": self.cores_used, "chips": self.topology.n_chips,
            "shards": len(self.shards), "split_processes": len({s.process for s in self.shards if s.parts > 1}),
            "param_bytes": self.param_bytes(), "memory_bytes": int(mem.sum()),
            "core_memory_max": int(used.max()) if len(used) else 0, "core_memory_mean": float(used.mean()) if len(used) else 0.0,
            "core_memory_capacity": self.topology.core.memory_bytes,
            "noc_events_per_token": float(self._core_pairs()[2].sum()), "hop_traffic": self.hop_traffic(),
            "chip_crossing_traffic": self.chip_traffic(), "max_link_load": max(loads.values()) if loads else 0.0,
            "links_used": len(loads), "placement": self.placement, "seconds": self.seconds,
        }

    # --- files ------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "graph": self.graph_info, "topology": self.topology.to_dict(),
            "placement": self.placement, "summary": self.summary(),
            "shards": [s.to_dict() | {"core": int(c)} for s, c in zip(self.shards, self.shard_core)],
            "traffic": {"src": self.src.tolist(), "dst": self.dst.tolist(), "events": self.events.tolist()},
        }

    def save(self, path: str | Path) -> Path:
        """Write the mapping JSON at once (an interrupted write leaves the previous file)."""
        return write_text(path, json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: str | Path, graph: ProcessGraph | None = None) -> "Mapping":
        """Read a mapping JSON; with `graph`, check that it was made for that graph."""
        path = Path(path)
        d = read_json(path, "mapping file", f"make one with `eventllm map GRAPH -o {path}`", MappingError)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise MappingError(f"{path} is not an eventllm mapping file")
        if d.get("version") != VERSION:
            raise MappingError(f"{path} has mapping format version {d.get('version')}; this eventllm reads {VERSION}: re-run `eventllm map`")
        try:
            m = cls._from_json(d, str(path))
        except MappingError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MappingError(f"{path}: malformed mapping ({type(e).__name__}: {e}); re-run `eventllm map`") from None
        if graph is not None:
            m.check_graph(graph)
        return m

    @classmethod
    def _from_json(cls, d: dict, where: str) -> "Mapping":
        for key, kind in (("topology", dict), ("shards", list), ("traffic", dict), ("graph", dict)):
            if not isinstance(d.get(key), kind):
                raise MappingError(f"{where}: {key!r} must be a{'n object' if kind is dict else ' list'}; re-run `eventllm map`")
        topo = Topology.from_dict(d["topology"], f"{where} [topology]")
        fields = set(Shard.__dataclass_fields__) | {"core"}
        for i, s in enumerate(d["shards"]):
            if not isinstance(s, dict) or set(s) != fields:
                raise MappingError(f"{where}: shard {i} must have the keys {', '.join(sorted(fields))}; re-run `eventllm map`")
            if not isinstance(s["core"], int) or not 0 <= s["core"] < topo.n_cores:
                raise MappingError(f"{where}: shard {i} is on core {s['core']!r}, the topology has cores 0..{topo.n_cores - 1}")
        shards = [Shard(**{k: v for k, v in s.items() if k != "core"}) for s in d["shards"]]
        t = d["traffic"]
        src, dst, events = (np.asarray(t.get(k), dtype=dt) for k, dt in (("src", np.int64), ("dst", np.int64), ("events", np.float64)))
        if not (src.ndim == dst.ndim == events.ndim == 1 and len(src) == len(dst) == len(events)):
            raise MappingError(f"{where}: traffic src, dst and events must be lists of one length; re-run `eventllm map`")
        if len(src) and (src.min() < 0 or dst.min() < 0 or max(src.max(), dst.max()) >= len(shards)):
            raise MappingError(f"{where}: traffic names a shard outside 0..{len(shards) - 1}; re-run `eventllm map`")
        if not np.isfinite(events).all() or (events < 0).any():
            raise MappingError(f"{where}: traffic events must be finite numbers ≥ 0; re-run `eventllm map`")
        return cls(topo, shards, np.array([s["core"] for s in d["shards"]], dtype=np.int64), src, dst, events,
                   d.get("graph", {}), d.get("placement", ""))

    def check_graph(self, graph: ProcessGraph) -> None:
        names = {s.process for s in self.shards}
        if names != set(graph.processes) or self.graph_info.get("fingerprint") != graph.meta.get("fingerprint"):
            raise MappingError(f"the mapping was made for another graph ({self.graph_info.get('model')}, "
                               f"{len(names)} processes); re-run `eventllm map` on this graph")
        made = (self.graph_info.get("weight_bits", 16), self.graph_info.get("delta_sites", 0))
        this = (graph.precision()["weight_bits"], len(graph.delta_sites()))
        if made != this:  # the same processes with other memory: weights at other bits, kept sums
            raise MappingError(f"the mapping was made for this model at {made[0]}-bit weights with {made[1]} delta-event "
                               f"sites, the graph has {this[0]}-bit weights and {this[1]}; re-run `eventllm map` on this graph")

    # --- pictures ---------------------------------------------------------------------------------------
    def heatmap(self, path: str | Path) -> Path:
        """A PNG with two core maps: memory used and NoC events per token."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = self.topology
        if t.noc.kind == "custom":
            raise MappingError("heat maps are drawn for mesh and torus topologies only")
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
        for ax, values, title, unit in (
            (axes[0], self.core_memory() / 1024, "memory used per core", "KiB"),
            (axes[1], self.core_traffic(), "NoC events in + out per core, per token", "events"),
        ):
            im = ax.imshow(values.reshape(t.rows, t.cols), cmap="viridis", interpolation="nearest")
            ax.set_title(title)
            ax.set_xlabel("column")
            ax.set_ylabel("row")
            fig.colorbar(im, ax=ax, label=unit, shrink=0.8)
        fig.suptitle(f"{self.graph_info.get('model', 'graph')} on {t.name} {t.rows}x{t.cols} ({self.cores_used} cores used)")
        fig.tight_layout()
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=110)
        finally:
            plt.close(fig)
        return Path(path)


def map_graph(graph: ProcessGraph, topology: str | Topology = "seneca", placement: str = "bisection", seed: int = 0,
              fill: float = 1.0) -> Mapping:
    """Map `graph` onto a topology (a preset name, PRESET:ROWSxCOLS, a TOML file or a Topology), using at most
    `fill` of each core's memory (below 1: more cores, each large process cut into more shards that work in
    parallel — latency bought with cores).

    >>> m = map_graph(graph, "seneca")                 # doctest: +SKIP
    >>> m.summary()["cores_used"], m.hop_traffic()
    """
    if placement not in PLACEMENTS:
        raise MappingError(f"unknown placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
    if not (isinstance(fill, (int, float)) and 0 < fill <= 1):
        raise MappingError(f"fill must be a fraction of a core's memory in (0, 1], got {fill!r}")
    start = time.perf_counter()
    # the memory per core decides the partition; the partition decides how many cores are needed
    topo0 = topology if isinstance(topology, Topology) else load_topology(topology, cores_needed=1)
    shards = partition(graph, topo0, fill)
    bins = pack(shards, int(topo0.core.memory_bytes * fill))
    topo = topology if isinstance(topology, Topology) else load_topology(topology, cores_needed=len(bins))
    if len(bins) > topo.n_cores:
        raise MappingError(f"the graph needs {len(bins)} {topo.name} cores but the topology has {topo.n_cores} "
                           f"({topo.rows}x{topo.cols}); use `{topo.name}` to size it automatically or a mesh of at least "
                           f"{len(bins)} cores")
    shard_bin = np.zeros(len(shards), dtype=np.int64)
    for i, members in enumerate(bins):
        shard_bin[members] = i
    src, dst, events = shard_traffic(graph, shards)
    a, b, t = bin_traffic(shard_bin, src, dst, events)
    if placement == "sequential":
        core_of_bin = place_sequential(len(bins), topo)
    elif placement == "random":
        core_of_bin = place_random(len(bins), topo, seed)
    else:
        core_of_bin = place_bisection(len(bins), topo, a, b, t, seed)
    info = {"model": graph.meta.get("model"), "fingerprint": graph.meta.get("fingerprint"), "processes": len(graph),
            "event_rates": "measured" if graph.meta.get("event_rates") else "dense", "fill": fill,
            "weight_bits": graph.precision()["weight_bits"], "delta_sites": len(graph.delta_sites())}
    return Mapping(topo, shards, core_of_bin[shard_bin], src, dst, events, info, placement, time.perf_counter() - start)
