"""Place core-sized bins of shards on cores so that busy pairs sit close, and route the traffic.

`place_bisection` is recursive bisection: the mesh is halved along its longer side, the bins are split in
proportion (first by data-flow order, then refined with networkx's Kernighan–Lin bisection on the traffic
graph, which keeps the halves' sizes), and each half is placed in its half of the mesh, down to one core.
The two baselines it is measured against: `place_sequential` (bin i on core i, row-major) and
`place_random`.
"""

from __future__ import annotations

import numpy as np

from mapping.topology import Topology

# Kernighan–Lin refinement on subproblems up to this many bins; above it the data-flow order split alone
# (the graph is chain-like, so contiguous halves are already good at the top levels) keeps mapping near-linear.
KL_MAX_BINS = 1024


def bin_traffic(shard_bin: np.ndarray, src: np.ndarray, dst: np.ndarray, events: np.ndarray):
    """Shard-to-shard traffic summed into bin-to-bin traffic (within a bin dropped): (a, b, events)."""
    a, b = shard_bin[src], shard_bin[dst]
    keep = a != b
    a, b, t = a[keep], b[keep], events[keep]
    if len(a) == 0:
        return a, b, t
    key = a * (shard_bin.max() + 1) + b
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.zeros(len(uniq))
    np.add.at(total, inv, t)
    n = shard_bin.max() + 1
    return uniq // n, uniq % n, total


def place_sequential(n_bins: int, topo: Topology) -> np.ndarray:
    """Bin i on core i: the naive placement (row-major over the mesh)."""
    return np.arange(n_bins)


def place_random(n_bins: int, topo: Topology, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(topo.n_cores)[:n_bins]


def place_bisection(n_bins: int, topo: Topology, a: np.ndarray, b: np.ndarray, t: np.ndarray, seed: int = 0) -> np.ndarray:
    """Recursive bisection of mesh and traffic graph (see the module docstring). Returns the core of each bin."""
    import networkx as nx

    if topo.noc.kind == "custom":
        return _place_custom(n_bins, topo, a, b, t)
    g = nx.Graph()
    g.add_nodes_from(range(n_bins))
    for u, v, w in zip(a.tolist(), b.tolist(), t.tolist()):
        if g.has_edge(u, v):
            g[u][v]["weight"] += w
        else:
            g.add_edge(u, v, weight=w)
    core = np.full(n_bins, -1, dtype=np.int64)
    rows, cols = topo.rows, topo.cols
    stack = [(list(range(n_bins)), 0, rows, 0, cols)]
    rng = np.random.default_rng(seed)
    while stack:
        bins, r0, r1, c0, c1 = stack.pop()
        cells = (r1 - r0) * (c1 - c0)
        if not bins:
            continue
        if cells == 1:
            core[bins[0]] = r0 * cols + c0
            continue
        if r1 - r0 >= c1 - c0:
            mid = (r0 + r1) // 2
            halves = ((r0, mid, c0, c1), (mid, r1, c0, c1))
        else:
            mid = (c0 + c1) // 2
            halves = ((r0, r1, c0, mid), (r0, r1, mid, c1))
        cap = [(h[1] - h[0]) * (h[3] - h[2]) for h in halves]
        n_first = min(cap[0], max(len(bins) - cap[1], round(len(bins) * cap[0] / cells)))
        first, second = bins[:n_first], bins[n_first:]
        if first and second and len(bins) <= KL_MAX_BINS:
            sub = g.subgraph(bins)
            if sub.number_of_edges():
                A, B = nx.algorithms.community.kernighan_lin_bisection(
                    sub, partition=(set(first), set(second)), weight="weight", max_iter=8, seed=int(rng.integers(1 << 30)))
                # networkx may return the halves in either order: take the one of the first half's size that
                # overlaps the first half most
                if len(A) != len(first) or (len(A) == len(B) and len(A & set(first)) < len(B & set(first))):
                    A, B = B, A
                order = {x: i for i, x in enumerate(bins)}  # keep data-flow order inside each half
                first, second = sorted(A, key=order.get), sorted(B, key=order.get)
        stack.append((second, *halves[1]))
        stack.append((first, *halves[0]))
    return core


def _place_custom(n_bins, topo, a, b, t):
    """Custom topologies: bins in data-flow order along a breadth-first walk of the core graph."""
    import networkx as nx

    walk = list(nx.bfs_tree(topo.graph(), 0))
    return np.array(walk[:n_bins], dtype=np.int64)


def hop_traffic(core: np.ndarray, a: np.ndarray, b: np.ndarray, t: np.ndarray, topo: Topology) -> float:
    """Σ events × router hops: the placement's cost (what placement minimises)."""
    if len(a) == 0:
        return 0.0
    return float((t * topo.hops(core[a], core[b])).sum())


def link_loads(core: np.ndarray, a: np.ndarray, b: np.ndarray, t: np.ndarray, topo: Topology) -> dict[tuple[int, int], float]:
    """Events per token on every link used (undirected), routing each pair with `topo.route`."""
    loads: dict[tuple[int, int], float] = {}
    if topo.noc.kind == "mesh":
        return _mesh_link_loads(core[a], core[b], t, topo)
    for u, v, w in zip(core[a].tolist(), core[b].tolist(), t.tolist()):
        path = topo.route(u, v)
        for x, y in zip(path, path[1:]):
            key = (min(x, y), max(x, y))
            loads[key] = loads.get(key, 0.0) + w
    return loads


def _mesh_link_loads(src: np.ndarray, dst: np.ndarray, t: np.ndarray, topo: Topology) -> dict[tuple[int, int], float]:
    """X-then-Y routing on a mesh, vectorised with difference arrays (no Python loop per packet or hop)."""
    R, C = topo.rows, topo.cols
    rs, cs = np.divmod(src, C)
    rd, cd = np.divmod(dst, C)
    horiz = np.zeros((R, C + 1))  # horiz[r, c]: link (r, c)–(r, c+1), accumulated as a difference along c
    lo, hi = np.minimum(cs, cd), np.maximum(cs, cd)
    np.add.at(horiz, (rs, lo), t)
    np.add.at(horiz, (rs, hi), -t)
    horiz = np.cumsum(horiz, axis=1)[:, : C - 1]
    vert = np.zeros((R + 1, C))  # vert[r, c]: link (r, c)–(r+1, c), X first so the column is the destination's
    lo, hi = np.minimum(rs, rd), np.maximum(rs, rd)
    np.add.at(vert, (lo, cd), t)
    np.add.at(vert, (hi, cd), -t)
    vert = np.cumsum(vert, axis=0)[: R - 1, :]
    loads = {}
    for r, c in zip(*np.nonzero(horiz > 1e-12)):
        loads[(int(r * C + c), int(r * C + c + 1))] = float(horiz[r, c])
    for r, c in zip(*np.nonzero(vert > 1e-12)):
        loads[(int(r * C + c), int((r + 1) * C + c))] = float(vert[r, c])
    return loads
