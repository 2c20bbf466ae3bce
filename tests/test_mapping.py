"""Mapping: topologies and their validation, partition into core-sized shards, placement quality, routes."""

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from eventllm.errors import MappingError
from eventllm.process.build import build_graph, rwkv_shape_graph
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Dense, Embedding, Threshold
from mapping import Mapping, load_topology, map_graph
from mapping.partition import partition
from mapping.topology import parse_topology

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def zoo_graph():
    from eventllm.pipeline import load

    return build_graph(load("zoo:rwkv4-tiny", thresholds=ROOT / "eventllm/zoo/rwkv4-tiny/thresholds.json").model, name="zoo:rwkv4-tiny")


# --- topology -----------------------------------------------------------------------------------------------
def test_mesh_hops_and_dimension_order_route():
    t = load_topology("seneca:3x4")
    assert t.n_cores == 12 and t.hops(0, 11) == 5
    assert t.route(0, 11) == [0, 1, 2, 3, 7, 11]  # along the row first, then down the column


def test_torus_wraps_around(tmp_path):
    f = tmp_path / "torus.toml"
    f.write_text('[core]\nmemory_bytes = 65536\nword_bits = 16\nnpe = 4\nclock_hz = 1e8\n[noc]\nkind = "torus"\n[mesh]\nrows = 4\ncols = 4\n')
    t = load_topology(str(f))
    assert t.hops(0, 3) == 1 and t.route(0, 3) == [0, 3]
    assert t.hops(0, 15) == 2


def test_preset_sizes_itself_and_says_so():
    t = load_topology("seneca", cores_needed=10)
    assert t.n_cores >= 10 and "10 cores" in t.note


BAD_TOPOLOGIES = {
    "negative memory": ('[core]\nmemory_bytes = -5\nword_bits = 16\nnpe = 1\nclock_hz = 1e8\n', "memory_bytes = -5"),
    "unknown key": ('colour = "red"\n[core]\nmemory_bytes = 5\nword_bits = 16\nnpe = 1\nclock_hz = 1e8\n', "unknown key.*colour"),
    "unknown core key": ('[core]\nmemory_bytes = 5\nword_bits = 16\nnpe = 1\nclock_hz = 1e8\nsram = 3\n', r"unknown key.*\[core\]: sram"),
    "missing core key": ('[core]\nmemory_bytes = 5\n', r"\[core\] needs"),
    "unparsable": ('[core\nmemory_bytes = 5', "not valid TOML"),
    "disconnected": ('[core]\nmemory_bytes = 5\nword_bits = 16\nnpe = 1\nclock_hz = 1e8\n[noc]\nkind = "custom"\n'
                     '[custom]\ncores = 4\nlinks = [[0, 1], [2, 3]]\n', "2 disconnected groups"),
    "bad link": ('[core]\nmemory_bytes = 5\nword_bits = 16\nnpe = 1\nclock_hz = 1e8\n[noc]\nkind = "custom"\n'
                 '[custom]\ncores = 2\nlinks = [[0, 7]]\n', "link .* must be"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOPOLOGIES))
def test_malformed_topology_files_get_one_clear_error(tmp_path, case):
    text, message = BAD_TOPOLOGIES[case]
    f = tmp_path / "t.toml"
    f.write_text(text)
    with pytest.raises(MappingError, match=message):
        load_topology(str(f), cores_needed=4)


@pytest.mark.parametrize("spec,message", [("nope", "unknown topology"), ("seneca:4by4", "ROWSxCOLS"), ("missing.toml", "not found")])
def test_bad_topology_names(spec, message):
    with pytest.raises(MappingError, match=message):
        load_topology(spec)


# --- partition ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,word_bytes", [("seneca", 2), ("loihi2", 1)])
def test_every_shard_fits_and_memory_totals_equal_the_parameter_bytes(zoo_graph, preset, word_bytes):
    m = map_graph(zoo_graph, preset)
    cap = m.topology.core.memory_bytes
    assert all(s.memory_bytes <= cap for s in m.shards)
    assert m.core_memory().max() <= cap
    assert m.param_bytes() == zoo_graph.n_parameters() * word_bytes
    # every process is covered exactly once along its split axis
    for name in zoo_graph.processes:
        parts = sorted((s.lo, s.hi) for s in m.shards if s.process == name)
        assert parts[0][0] == 0 and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


def test_dense_split_follows_the_traffic():
    """A Dense of 8 outputs x 4096 inputs on 32 KiB cores: splitting by outputs would multicast all 4096 input
    events to every shard; by inputs each event goes to one shard and only 8 partial sums per shard come back."""
    e = Embedding("emb", weights=np.ones((2, 4096)))
    t = Threshold("t", n=4096)
    d = Dense("d", weights=np.ones((8, 4096)))
    e.out.connect(t.inp)
    t.out.connect(d.inp)
    g = ProcessGraph([e, t, d], "d.out")
    topo = parse_topology({"core": {"memory_bytes": 32768, "word_bits": 16, "npe": 1, "clock_hz": 1e8},
                           "mesh": {"rows": 8, "cols": 8}}, "test")
    shards = [s for s in partition(g, topo) if s.process == "d"]
    assert {s.split for s in shards} == {"inputs"}
    # 8 x 4096 weights at 2 bytes = 64 KiB: 3 shards of 32 KiB with their buffers; the columns cover 0..4096
    assert len(shards) == 3 and shards[-1].hi == 4096


def test_fill_cuts_projections_into_more_shards_that_run_in_parallel():
    """A Dense of 128 x 128 (32 KiB of 16-bit weights) fed by 128 events on 40 KiB cores with 8 NPEs: fill 1 → one
    shard (32 KiB + 2 × (128 + 128) bytes of buffers); fill 0.5 (20 KiB) → two shards of 64 rows (16 KiB +
    2 × (128 + 64) bytes), on two cores, each doing half the MACs: the Dense's compute time nearly halves."""
    from sim.costs import load_costs
    from sim.engine import Simulator

    e = Embedding("emb", weights=np.ones((1, 128)))
    d = Dense("d", weights=np.ones((128, 128)))
    e.out.connect(d.inp)
    g = ProcessGraph([e, d], "d.out")
    topo = parse_topology({"core": {"memory_bytes": 40960, "word_bits": 16, "npe": 8, "clock_hz": 1e8},
                           "mesh": {"rows": 4, "cols": 4}}, "test")
    whole = [s for s in partition(g, topo) if s.process == "d"]
    assert [(s.split, s.memory_bytes) for s in whole] == [("whole", 32768 + 2 * (128 + 128))]
    halves = [s for s in partition(g, topo, fill=0.5) if s.process == "d"]
    assert [(s.split, s.lo, s.hi, s.memory_bytes) for s in halves] == [("outputs", 0, 64, 16384 + 2 * (128 + 64)),
                                                                       ("outputs", 64, 128, 16384 + 2 * (128 + 64))]
    m = map_graph(g, topo, fill=0.5)
    assert len({int(m.shard_core[s.id]) for s in m.shards if s.process == "d"}) == 2
    assert m.graph_info["fill"] == 0.5
    cycles = []
    for mapping in (map_graph(g, topo), m):
        sim = Simulator(g, mapping, load_costs("seneca"))
        sim.step(0)
        cycles.append(sim._compute_cycles(sim.result.counts[sim.shards_of["d"]]).max())
    # events in (1 cycle each) + MACs over 8 NPEs + events out: 128 + 128·128/8 + 128, then 128 + 128·64/8 + 64
    assert cycles == [128 + 2048 + 128, 128 + 1024 + 64]
    with pytest.raises(MappingError, match="fill"):
        map_graph(g, topo, fill=0)


def test_topology_too_small_names_the_cores_needed(zoo_graph):
    with pytest.raises(MappingError, match=r"needs \d+ seneca cores but the topology has 4"):
        map_graph(zoo_graph, "seneca:2x2")


def test_core_too_small_for_one_process(tmp_path, zoo_graph):
    f = tmp_path / "tiny.toml"
    f.write_text('[core]\nmemory_bytes = 512\nword_bits = 16\nnpe = 1\nclock_hz = 1e8\n')
    with pytest.raises(MappingError, match="more memory per core"):
        map_graph(zoo_graph, str(f))


# --- placement and routes -----------------------------------------------------------------------------------
def test_every_traffic_entry_has_a_route_over_existing_links(zoo_graph):
    m = map_graph(zoo_graph, "seneca")
    noc = m.topology.graph()
    connected = {(c.src.process.name, c.dst.process.name) for c in zoo_graph.connections()}
    seen = set()
    for i in range(len(m.src)):
        path = m.route(i)
        assert path[0] == m.shard_core[m.src[i]] and path[-1] == m.shard_core[m.dst[i]]
        assert all(noc.has_edge(a, b) for a, b in zip(path, path[1:]))
        seen.add((m.shards[m.src[i]].process, m.shards[m.dst[i]].process))
    assert seen == connected  # every connection of the graph is carried


def test_custom_topology_routes_by_shortest_paths(tmp_path):
    f = tmp_path / "ring.toml"
    links = ", ".join(f"[{i}, {(i + 1) % 40}]" for i in range(40))
    f.write_text(f'[core]\nmemory_bytes = 262144\nword_bits = 16\nnpe = 8\nclock_hz = 5e8\n[noc]\nkind = "custom"\n'
                 f'[custom]\ncores = 40\nlinks = [{links}]\n')
    from eventllm.models import RWKV, RWKVConfig

    g = build_graph(RWKV(RWKVConfig(vocab_size=64, d_model=32, n_layer=2)).randomize(0))
    m = map_graph(g, str(f))
    assert m.topology.hops(0, 20) == 20 and m.topology.hops(0, 39) == 1
    assert all(len(m.route(i)) == m.topology.hops(m.shard_core[m.src[i]], m.shard_core[m.dst[i]]) + 1 for i in range(len(m.src)))


@pytest.mark.parametrize("which", ["zoo", "430M"])
def test_bisection_placement_beats_sequential_by_30_percent_and_random(zoo_graph, which):
    graph = zoo_graph if which == "zoo" else rwkv_shape_graph(24, 1024)
    h = {pl: map_graph(graph, "seneca", placement=pl).hop_traffic() for pl in ("bisection", "sequential", "random")}
    assert h["bisection"] <= 0.7 * h["sequential"]
    assert h["bisection"] < h["random"]


def test_mesh_link_loads_match_routing_each_packet(zoo_graph):
    m = map_graph(zoo_graph, "seneca")
    fast = m.link_loads()
    slow: dict = {}
    for i in range(len(m.src)):
        path = m.route(i)
        for a, b in zip(path, path[1:]):
            key = (min(a, b), max(a, b))
            slow[key] = slow.get(key, 0.0) + m.events[i]
    assert set(fast) == set(slow)
    assert all(abs(fast[k] - slow[k]) <= 1e-6 * max(1.0, slow[k]) for k in slow)


# --- files and CLI ------------------------------------------------------------------------------------------
def test_mapping_json_round_trips_and_refuses_another_graph(zoo_graph, tmp_path, small_rwkv):
    m = map_graph(zoo_graph, "seneca")
    m.save(tmp_path / "m.json")
    again = Mapping.load(tmp_path / "m.json", zoo_graph)
    assert np.array_equal(again.shard_core, m.shard_core) and again.summary() | {"seconds": 0} == m.summary() | {"seconds": 0}
    with pytest.raises(MappingError, match="another graph"):
        Mapping.load(tmp_path / "m.json", build_graph(small_rwkv))


def test_eventllm_map_writes_json_and_heatmap(tmp_path):
    from eventllm.models import RWKV, RWKVConfig

    g = build_graph(RWKV(RWKVConfig(vocab_size=2000, d_model=128, n_layer=2)).randomize(0))
    g.save(tmp_path / "g")
    cli = [sys.executable, "-m", "eventllm"]
    r = subprocess.run([*cli, "map", str(tmp_path / "g"), "--topology", "loihi2", "-o", str(tmp_path / "m.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "events x hops vs sequential" in r.stdout
    assert json.loads((tmp_path / "m.json").read_text())["format"] == "eventllm-mapping"
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    r = subprocess.run([*cli, "map", str(tmp_path / "g"), "--topology", "seneca:1x1", "-o", str(tmp_path / "x.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cores" in r.stderr


def test_hardware_costs_live_in_the_cost_table_not_the_topology():
    from eventllm.errors import MappingError

    spec = {"core": {"memory_bytes": 1024, "word_bits": 16, "npe": 1, "clock_hz": 1e9}, "mesh": {"rows": 2, "cols": 2},
            "noc": {"kind": "mesh", "hop_energy_j": 2e-12}}
    with pytest.raises(MappingError, match="belong to the cost table"):
        parse_topology(spec, "t.toml")
