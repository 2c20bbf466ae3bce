"""The simulator: counts equal to a hand calculation, logits equal to the executor's and torch's, reports."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eventllm.errors import ConfigError, MappingError
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Dense, Embedding, ReLU, Threshold
from mapping import map_graph
from mapping.topology import parse_topology
from sim.costs import ENERGY_KEYS, TIME_KEYS, load_costs
from sim.engine import COUNTERS, Simulator
from sim.report import simulate

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = ROOT / "eventllm" / "zoo" / "rwkv4-tiny" / "thresholds.json"


def topo(memory, rows, cols, npe=8, clock=5e8):
    return parse_topology({"core": {"memory_bytes": memory, "word_bits": 16, "npe": npe, "clock_hz": clock},
                           "mesh": {"rows": rows, "cols": cols}}, "hand")


def test_counts_energy_and_latency_of_a_hand_built_graph():
    graph = runpy.run_path(str(ROOT / "examples" / "build_graph_by_hand.py"))["build"]()
    # 30-byte cores: emb | gate | hidden + relu | out on cores 0..3 of a 1x5 row (sequential placement)
    m = map_graph(graph, topo(30, 1, 5), placement="sequential")
    assert [(s.process, int(c)) for s, c in zip(m.shards, m.shard_core)] == [("emb", 0), ("gate", 1), ("hidden", 2), ("relu", 2), ("out", 3)]
    sim = Simulator(graph, m, load_costs("seneca"))
    assert sim.step(1).tolist() == [3.0, 1.5]
    c = dict(zip(COUNTERS, sim.result.counts.sum(0)))
    # token 1: emb row [0.2, -0.9, 1.5] (3 events) → θ = 0.5 keeps 2 → hidden [1.5, -0.9]: 2 events x 2 rows = 4
    # synops → relu [1.5, 0]: 1 event → out: 1 event x 2 rows = 2 synops
    assert c["synops"] == 6
    assert c["weight_reads"] == 6 + 3  # one weight per synop + the embedding row
    assert c["events_in"] == 3 + 2 + 2 + 1  # gate, hidden, relu, out
    assert c["events_out"] == 3 + 2 + 2 + 1 + 2  # emb, gate, hidden, relu, out
    assert c["neuron_updates"] == 3 + 3 + 2 and c["neuron_ops"] == 0 + 3 + 2  # emb (lookup), gate (compare), relu
    assert c["param_reads"] == 1  # θ
    # packets: emb→gate 3, gate→hidden 2, hidden→relu 0 (same core), relu→out 1; each one hop
    assert c["packets"] == 6 and c["hops"] == 6
    # SENECA costs (pJ): 6 synops x 1.4 + 9 weight reads x 3.7 + 5 ops x 1.4 + 1 param read x 3.7
    #                  + 8 events in x 0.5 + 10 events out x 1.1 + 6 hops x 2 = 79.4 pJ
    assert sim.result.energy_per_token[0] == pytest.approx(79.4e-12)
    # cycles (8 NPEs): emb 3 out + 3 packets = 6; gate 3 in + 1 + 2 out + 2 packets = 8; hidden 2 + 1 + 2 = 5;
    # relu 2 + 1 + 1 + 1 packet = 5; out 1 + 1 + 2 = 4; plus one hop on each of the 3 remote transfers:
    # 6 + 1 + 8 + 1 + 5 + 0 + 5 + 1 + 4 = 31 cycles at 500 MHz = 62 ns
    assert sim.result.latency_per_token[0] == pytest.approx(62e-9)
    # the NoC links of the 1x5 row carry 3, 2 and 1 packets
    assert sim.link_loads() == {(0, 1): 3.0, (1, 2): 2.0, (2, 3): 1.0}


def test_partial_sums_of_an_input_split_dense():
    e = Embedding("emb", weights=np.ones((2, 4096)))
    t = Threshold("t", n=4096)
    d = Dense("d", weights=np.ones((8, 4096)))
    r = ReLU("r", n=8)
    e.out.connect(t.inp)
    t.out.connect(d.inp)
    d.out.connect(r.inp)
    g = ProcessGraph([e, t, d, r], "r.out")
    m = map_graph(g, topo(32768, 2, 4), placement="sequential")
    shards = [s for s in m.shards if s.process == "d"]
    assert [s.split for s in shards] == ["inputs"] * 3
    sim = Simulator(g, m, load_costs("seneca"))
    assert sim.step(0).tolist() == [4096.0] * 8
    c = sim.result.counts
    assert [c[s.id, COUNTERS.index("events_in")] for s in shards] == [s.hi - s.lo for s in shards]
    assert sum(c[s.id, COUNTERS.index("synops")] for s in shards) == 4096 * 8
    # each shard sends its 8 partial sums to the ReLU's core
    remote = [s for s in shards if m.shard_core[s.id] != m.shard_core[[x.id for x in m.shards if x.process == "r"][0]]]
    assert sum(c[s.id, COUNTERS.index("packets")] for s in shards) == 8 * len(remote)


@pytest.fixture(scope="module")
def zoo():
    from eventllm.models.registry import load_model

    from eventllm.sparsity.thresholds import apply_thresholds

    loaded = load_model("zoo:rwkv4-tiny")
    apply_thresholds(loaded.model, THRESHOLDS)
    graph = build_graph(loaded.model.eval(), name="zoo:rwkv4-tiny")
    return loaded, graph, map_graph(graph, "seneca")


def test_simulator_logits_equal_executor_and_torch_over_64_tokens(zoo):
    loaded, graph, m = zoo
    tokens = torch.randint(0, 8000, (64,), generator=torch.Generator().manual_seed(5)).tolist()
    sim = Simulator(graph, m, load_costs("seneca"))
    got = sim.run(tokens)
    assert np.array_equal(got, Executor(graph).run(tokens))
    state, ref = loaded.model.init_state(), []
    for t in tokens:
        logits, state = loaded.model.step(t, state)
        ref.append(logits.numpy())
    assert np.abs(got - np.stack(ref)).max() <= 1e-4
    ex = Executor(graph)
    ex.run(tokens)
    assert sim.result.counts[:, COUNTERS.index("synops")].sum() == sum(c["synops"] for c in ex.counts.per_process.values())


def test_thresholds_save_energy_and_dense_mode_processes_every_entry(zoo):
    _, graph, m = zoo
    tokens = [11, 250, 37, 4000, 9, 77, 1200, 5]
    runs = simulate(graph, m, load_costs("seneca"), tokens, ("thresholded", "natural", "dense"))
    thr, nat, dense = runs["thresholded"], runs["natural"], runs["dense"]
    assert thr["synaptic_ops_per_token"] < nat["synaptic_ops_per_token"] < dense["synaptic_ops_per_token"]
    assert dense["synaptic_ops_per_token"] == graph.dense_synops_per_token()
    assert thr["energy_per_token_j"] < nat["energy_per_token_j"] < dense["energy_per_token_j"]
    assert thr["activation_sparsity"] > nat["activation_sparsity"]
    assert all(p.theta > 0 for p in graph if p.kind == "threshold")  # θ restored after the θ = 0 runs


def test_opt_graph_simulates_like_the_executor(small_opt):
    small_opt.set_thetas(0.2)
    graph = build_graph(small_opt)
    m = map_graph(graph, "seneca:4x4")
    tokens = list(range(1, 20))
    sim = Simulator(graph, m, load_costs("loihi2"))
    assert np.array_equal(sim.run(tokens), Executor(graph).run(tokens))
    assert sim.result.counts[:, COUNTERS.index("state_reads")].sum() > 0  # the key/value cache is read


def test_mapping_of_another_graph_is_refused(zoo, small_rwkv):
    _, _, m = zoo
    with pytest.raises(MappingError, match="map this graph"):
        Simulator(build_graph(small_rwkv), m, load_costs("seneca"))


@pytest.mark.parametrize("text,message", [
    ('name = "x"\ncolour = 1\n', "unknown key"),
    ('[energy_j]\nsynop = 1e-12\n[time_cycles]\n', "misses"),
    ('[energy_j]\n' + "".join(f"{k} = -1.0\n" for k in ENERGY_KEYS) + '[time_cycles]\n' + "".join(f"{k} = 1\n" for k in TIME_KEYS),
     "non-negative"),
    ("[energy_j\n", "not valid TOML"),
])
def test_bad_cost_files(tmp_path, text, message):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_costs(str(f))


def test_eventllm_simulate_json_and_report(tmp_path):
    from eventllm.models import RWKV, RWKVConfig
    from eventllm.process.executor import measure_event_rates

    g = build_graph(RWKV(RWKVConfig(vocab_size=500, d_model=64, n_layer=2)).randomize(0))
    g.meta["event_rates"] = measure_event_rates(g, [1, 2, 3])
    for p in g:
        if p.kind == "threshold":
            p.vars["theta"].value[...] = 0.3
    g.save(tmp_path / "g")
    cli = [sys.executable, "-m", "eventllm"]
    r = subprocess.run([*cli, "map", str(tmp_path / "g"), "-o", str(tmp_path / "m.json"), "--no-heatmap"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*cli, "simulate", str(tmp_path / "g"), "--mapping", str(tmp_path / "m.json"), "--token-ids", "5,6,7,8",
                        "--compare-dense", "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "rep"), "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "s.json").read_text())
    for key in ("tokens", "energy_per_token_j", "latency_per_token_s", "activation_sparsity", "synaptic_ops_per_token", "by_layer"):
        assert key in out and key in out["dense"]
    assert out["tokens"] == 4 and out["energy_ratio"] > 1 and out["latency_ratio"] > 1
    assert [b["layer"] for b in out["by_layer"]] == ["input", "L0", "L1", "output"]
    assert len(out["per_token"]) == 4 and set(out["by_process"]) >= {"emb", "L0.att.key", "head"}
    assert out["by_process"]["L0.att.key"]["synops"] > 0 and out["max_link_load_packets_per_token"] > 0
    for png in ("energy_breakdown.png", "layer_latency.png", "core_activity.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"
    r = subprocess.run([*cli, "simulate", str(tmp_path / "g"), "--mapping", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "pass --token-ids" in r.stderr


@pytest.mark.parametrize("content,message", [("{", "not valid JSON"), ('{"format": "x"}', "not an eventllm mapping"),
                                             ('{"format": "eventllm-mapping", "version": 7}', "version 7")])
def test_bad_mapping_files(tmp_path, content, message):
    from mapping import Mapping

    f = tmp_path / "m.json"
    f.write_text(content)
    with pytest.raises(MappingError, match=message):
        Mapping.load(f)
