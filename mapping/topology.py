"""Neuromorphic hardware as data: cores with their memory and clock, and the network-on-chip between them.

A `Topology` is a set of cores on a 2-D mesh (or a torus, or a user's own graph of links), possibly spread
over several chips joined by slower chip-to-chip links. Presets live in `mapping/presets/NAME.toml` with
their sources; `load_topology` reads a preset name (`seneca`, `loihi2`), a fixed size (`seneca:8x8`) or a
user TOML file.

>>> topo = load_topology("seneca:4x4")
>>> topo.n_cores, topo.hops(0, 15)
(16, 6)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eventllm.config import read_toml
from eventllm.errors import MappingError
from eventllm.limits import check_memory, gib

PRESETS = Path(__file__).parent / "presets"


@dataclass
class CoreSpec:
    memory_bytes: int  # data memory for weights, parameters, state and buffers
    word_bits: int  # width of a stored weight / activation
    npe: int  # neuron processing elements working in parallel
    clock_hz: float

    @property
    def word_bytes(self) -> float:
        return self.word_bits / 8


# The topology is structure only (cores, memory, links, chips). What an action costs — a hop, a chip-to-chip
# crossing, a synaptic op — is in the cost table (sim/presets/*.toml), in one place.
COST_KEYS = {"packet_bits", "hop_energy_j", "hop_latency_cycles", "link_energy_j", "link_latency_cycles"}


@dataclass
class NocSpec:
    kind: str = "mesh"  # mesh | torus | custom


@dataclass
class ChipSpec:
    rows: int = 16  # cores per chip (multi-chip systems tile the mesh with chips of this size)
    cols: int = 16


@dataclass
class Topology:
    """Cores numbered 0..n-1. On a mesh/torus, core c sits at (row, col) = divmod(c, cols) of the global grid
    (chips tile that grid, `chip.rows` x `chip.cols` cores each); a custom topology lists its links."""

    name: str
    core: CoreSpec
    noc: NocSpec
    chip: ChipSpec
    rows: int = 0
    cols: int = 0
    links: list[tuple[int, int]] | None = None  # custom topologies only
    n_custom: int = 0
    sources: dict = field(default_factory=dict)
    note: str = ""  # how the size was chosen

    @property
    def n_cores(self) -> int:
        return self.n_custom if self.noc.kind == "custom" else self.rows * self.cols

    @property
    def n_chips(self) -> int:
        if self.noc.kind == "custom":
            return 1
        return math.ceil(self.rows / self.chip.rows) * math.ceil(self.cols / self.chip.cols)

    def coords(self, cores) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(cores)
        return c // self.cols, c % self.cols

    def hops(self, a, b):
        """Router hops from core a to core b (arrays work elementwise)."""
        if self.noc.kind == "custom":
            d = self._distances()
            return d[np.asarray(a), np.asarray(b)]
        (ra, ca), (rb, cb) = self.coords(a), self.coords(b)
        dr, dc = np.abs(ra - rb), np.abs(ca - cb)
        if self.noc.kind == "torus":
            dr, dc = np.minimum(dr, self.rows - dr), np.minimum(dc, self.cols - dc)
        out = dr + dc
        return int(out) if np.ndim(out) == 0 else out

    def chip_crossings(self, a, b):
        """Chip-to-chip links an XY route from a to b crosses (0 on one chip)."""
        if self.noc.kind == "custom":
            return 0 * np.asarray(a)
        (ra, ca), (rb, cb) = self.coords(a), self.coords(b)
        out = np.abs(ra // self.chip.rows - rb // self.chip.rows) + np.abs(ca // self.chip.cols - cb // self.chip.cols)
        return int(out) if np.ndim(out) == 0 else out

    def route(self, a: int, b: int) -> list[int]:
        """The cores a packet visits from a to b: dimension-order (X then Y) on meshes and tori, a networkx
        shortest path on custom topologies."""
        if self.noc.kind == "custom":
            import networkx as nx

            return nx.shortest_path(self.graph(), a, b)
        (ra, ca), (rb, cb) = divmod(a, self.cols), divmod(b, self.cols)
        path = [a]
        for axis, (start, end, size) in enumerate(((ca, cb, self.cols), (ra, rb, self.rows))):
            step = 1 if end >= start else -1
            dist = abs(end - start)
            if self.noc.kind == "torus" and dist > size - dist:
                step, dist = -step, size - dist
            pos = start
            for _ in range(dist):
                pos = (pos + step) % size
                r, c = (ra, pos) if axis == 0 else (pos, cb)
                path.append(r * self.cols + c)
        return path

    def graph(self):
        """The NoC as a networkx.Graph: nodes are cores (with row, col, chip), edges are links."""
        import networkx as nx

        g = nx.Graph(name=self.name)
        if self.noc.kind == "custom":
            g.add_nodes_from(range(self.n_custom))
            g.add_edges_from(self.links)
            return g
        for c in range(self.n_cores):
            r, col = divmod(c, self.cols)
            g.add_node(c, row=r, col=col, chip=(r // self.chip.rows, col // self.chip.cols))
        for c in range(self.n_cores):
            r, col = divmod(c, self.cols)
            for rr, cc in ((r, col + 1), (r + 1, col)):
                if self.noc.kind == "torus":
                    rr, cc = rr % self.rows, cc % self.cols
                if rr < self.rows and cc < self.cols and (rr, cc) != (r, col):
                    g.add_edge(c, rr * self.cols + cc)
        return g

    def _distances(self) -> np.ndarray:
        if not hasattr(self, "_dist"):
            import networkx as nx

            d = np.zeros((self.n_custom, self.n_custom), dtype=np.int64)
            for src, lengths in nx.all_pairs_shortest_path_length(self.graph()):
                for dst, n in lengths.items():
                    d[src, dst] = n
            self._dist = d
        return self._dist

    def resized(self, rows: int, cols: int, note: str = "") -> "Topology":
        return Topology(self.name, self.core, self.noc, self.chip, rows, cols, None, 0, self.sources, note)

    def to_dict(self) -> dict:
        return {"name": self.name, "core": asdict(self.core), "noc": asdict(self.noc), "chip": asdict(self.chip),
                "rows": self.rows, "cols": self.cols, "links": self.links, "n_custom": self.n_custom,
                "sources": self.sources, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict, where: str = "topology") -> "Topology":
        """The inverse of `to_dict`, checked like a topology file (a mapping file carries one)."""
        if not isinstance(d, dict) or not isinstance(d.get("core"), dict) or not isinstance(d.get("noc"), dict):
            raise MappingError(f"{where}: the topology must be an object with core, noc and chip tables")
        data = {"name": d.get("name", ""), "core": d["core"], "noc": d["noc"], "chip": d.get("chip", {}), "sources": d.get("sources", {})}
        if d["noc"].get("kind") == "custom":
            data["custom"] = {"cores": d.get("n_custom"), "links": d.get("links")}
        else:
            data["mesh"] = {"rows": d.get("rows"), "cols": d.get("cols")}
        topo = parse_topology(data, where)
        if not isinstance(d.get("note", ""), str):
            raise MappingError(f"{where}: note must be a string")
        topo.note = d.get("note", "")
        return topo


# --- reading presets and user files -------------------------------------------------------------------------
_SECTIONS = {"core": CoreSpec, "noc": NocSpec, "chip": ChipSpec}
_TOP_KEYS = {"name", "description", "core", "noc", "chip", "mesh", "sources", "custom"}


# The largest neuromorphic systems built have about a million cores (SpiNNaker: 1,036,800 ARM cores);
# a mesh beyond that is a typo, and refusing it at once beats minutes of placement.
MAX_CORES = 1 << 21
BYTES_PER_CORE = 64  # the mapper's and simulator's per-core arrays (placement, memory, traffic), generously


def check_size(n_cores: int, where: str, custom: bool = False) -> None:
    """Refuse a topology too large to map: more than MAX_CORES, or more memory than the machine has free."""
    needed = n_cores * BYTES_PER_CORE + (8 * n_cores * n_cores if custom else 0)  # custom: all-pairs hop table
    if n_cores > MAX_CORES:
        raise MappingError(f"{where}: {n_cores:,} cores is more than the {MAX_CORES:,} eventllm maps (it would need "
                           f"{gib(needed)} for the mapping alone); give a smaller mesh, or the preset name alone to size it to the graph")
    check_memory(needed, f"{where}: a topology of {n_cores:,} cores", "give a smaller mesh", MappingError)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def parse_topology(data: dict, where: str) -> Topology:
    """Validate a topology description (the TOML's content) and build the Topology."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    for key, kind in (("name", str), ("description", str), ("sources", dict), ("mesh", dict), ("custom", dict)):
        if key in data and not isinstance(data[key], kind):
            raise MappingError(f"{where}: {key} must be a {'table' if kind is dict else 'string'}, got {data[key]!r}")
    parts = {}
    for section, cls in _SECTIONS.items():
        given = data.get(section, {})
        if not isinstance(given, dict):
            raise MappingError(f"{where}: [{section}] must be a table")
        allowed = set(cls.__dataclass_fields__)
        bad = set(given) - allowed
        if bad & COST_KEYS:
            raise MappingError(f"{where}: [{section}] {', '.join(sorted(bad & COST_KEYS))}: per-action energy and time belong "
                               "to the cost table, not the topology; put them in a cost TOML (noc_hop, chip_link, hop, …; "
                               "see sim/presets/seneca.toml) and pass it with `costs`")
        if bad:
            raise MappingError(f"{where}: unknown key(s) in [{section}]: {', '.join(sorted(bad))}; allowed: {', '.join(sorted(allowed))}")
        if section == "core" and set(allowed) - set(given):
            raise MappingError(f"{where}: [core] needs {', '.join(sorted(allowed - set(given)))}")
        for k, v in given.items():
            if k == "kind":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0 or (v == 0 and k in ("memory_bytes", "word_bits", "npe", "clock_hz", "rows", "cols")):
                raise MappingError(f"{where}: [{section}] {k} = {v!r} must be a positive number")
        parts[section] = cls(**given)
    if parts["noc"].kind not in ("mesh", "torus", "custom"):
        raise MappingError(f"{where}: [noc] kind must be mesh, torus or custom, got {parts['noc'].kind!r}")
    topo = Topology(data.get("name", Path(where).stem), parts["core"], parts["noc"], parts["chip"], sources=data.get("sources", {}))
    if parts["noc"].kind == "custom":
        custom = data.get("custom", {})
        n, links = custom.get("cores"), custom.get("links")
        if not isinstance(n, int) or n <= 0 or not isinstance(links, list):
            raise MappingError(f"{where}: a custom topology needs [custom] cores = N and links = [[a, b], …]")
        for link in links:
            if not (isinstance(link, list) and len(link) == 2 and all(isinstance(x, int) and 0 <= x < n for x in link)):
                raise MappingError(f"{where}: link {link!r} must be [a, b] with cores in 0..{n - 1}")
        check_size(n, where, custom=True)
        topo.n_custom, topo.links = n, [tuple(x) for x in links]
        import networkx as nx

        if not nx.is_connected(topo.graph()):
            parts_ = nx.number_connected_components(topo.graph())
            raise MappingError(f"{where}: the links leave the cores in {parts_} disconnected groups; every core must reach every other")
    else:
        mesh = data.get("mesh", {})
        bad = set(mesh) - {"rows", "cols"}
        if bad:
            raise MappingError(f"{where}: unknown key(s) in [mesh]: {', '.join(sorted(bad))}; allowed: cols, rows")
        for k in ("rows", "cols"):
            if k in mesh and (not isinstance(mesh[k], int) or mesh[k] <= 0):
                raise MappingError(f"{where}: [mesh] {k} = {mesh[k]!r} must be a positive integer")
        topo.rows, topo.cols = mesh.get("rows", 0), mesh.get("cols", 0)
        check_size(topo.rows * topo.cols, where)
    return topo


def load_topology(spec: str, cores_needed: int | None = None) -> Topology:
    """A preset (`seneca`, `loihi2`), a preset at a fixed size (`seneca:ROWSxCOLS`) or a TOML file.

    A preset without a size becomes the smallest near-square mesh with at least `cores_needed` cores (its
    `note` says so); a mesh bigger than one chip is tiled into the preset's chips.
    """
    name, _, size = spec.partition(":")
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise MappingError(f"{spec} is a folder, not a topology file; give a preset ({', '.join(preset_names())}) or a TOML file")
        if not path.is_file():
            raise MappingError(f"topology file {spec} not found; give a preset ({', '.join(preset_names())}) or a TOML file")
        topo = parse_topology(read_toml(path, "topology file", MappingError), str(path))
        if topo.noc.kind != "custom" and not (topo.rows and topo.cols):
            if cores_needed is None:
                raise MappingError(f"{path}: give the mesh size in [mesh] rows/cols")
            topo = _auto_size(topo, cores_needed)
        return topo
    if name not in preset_names():
        raise MappingError(f"unknown topology {spec!r}: use a preset ({', '.join(preset_names())}), PRESET:ROWSxCOLS or a .toml file")
    topo = parse_topology(read_toml(PRESETS / f"{name}.toml", "topology file", MappingError), name)
    if size:
        try:
            rows, cols = (int(x) for x in size.lower().split("x"))
            assert rows > 0 and cols > 0
        except (ValueError, AssertionError):
            raise MappingError(f"bad size {size!r} in {spec!r}: write ROWSxCOLS, e.g. {name}:8x8") from None
        check_size(rows * cols, spec)
        return topo.resized(rows, cols, f"{rows}x{cols} cores as requested")
    if cores_needed is None:
        return topo.resized(topo.chip.rows, topo.chip.cols, "one chip")
    return _auto_size(topo, cores_needed)


def _auto_size(topo: Topology, n: int) -> Topology:
    rows = max(1, math.isqrt(n))
    cols = math.ceil(n / rows)
    return topo.resized(rows, cols, f"smallest near-square mesh for the {n} cores the graph needs: {rows}x{cols}")
