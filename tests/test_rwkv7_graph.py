"""RWKV-7's process graph: the executor, the message engine and the trace engine equal the torch model (1e-4) and
each other, with its per-head kinds whole on a core or split by heads; MACs by hand; save and load."""

import numpy as np
import pytest
import torch

from eventllm.masks import event_masks
from eventllm.models.rwkv7 import RWKV7, RWKV7Config
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.process.graph import ProcessGraph
from eventllm.process.models import model_class_for
from eventllm.process.rwkv7 import WKV7
from mapping import map_graph
from mapping.topology import parse_topology
from sim.costs import load_costs
from sim.engine import COUNTERS, Simulator
from sim.trace import TraceEngine

TOL = 1e-4
CFG = dict(vocab_size=53, d_model=96, n_layer=3, head_size=32, d_ffn=200, d_decay=24, d_iclr=16, d_value=8, d_gate=40)
# cores of 4000 bytes: a WKV-7 state of 3 heads x 32 x 32 does not fit one, so it is cut into its heads
SMALL_CORES = parse_topology({"core": {"memory_bytes": 4000, "word_bits": 16, "npe": 8, "clock_hz": 5e8},
                              "mesh": {"rows": 30, "cols": 30}}, "small")


@pytest.fixture(scope="module")
def model():
    m = RWKV7(RWKV7Config(**CFG)).randomize(seed=1).eval()
    m.set_thetas({k: 0.02 + 0.01 * (n % 5) for n, k in enumerate(m.get_thetas())})  # a different θ per site
    return m


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, CFG["vocab_size"], (40,), generator=torch.Generator().manual_seed(0)).tolist()


@pytest.fixture(scope="module")
def expected(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0][0].numpy()


@pytest.fixture(scope="module")
def graph(model):
    return build_graph(model, name="random rwkv7")


@pytest.fixture(scope="module", params=["seneca", "small"])
def simulated(request, graph, ids):
    """The message engine's run of the graph on SENECA (every per-head kind whole) or on small cores (cut by heads)."""
    mapping = map_graph(graph, "seneca" if request.param == "seneca" else SMALL_CORES)
    sim = Simulator(graph, mapping, load_costs("seneca"))
    logits = np.stack([sim.step(t) for t in ids])
    return request.param, mapping, sim, logits


def test_executor_equals_torch_with_thresholds_and_dense(model, graph, ids, expected):
    assert np.abs(Executor(graph).run(ids) - expected).max() <= TOL
    dense = Executor(graph, overrides={"theta": 0.0}).run(ids)
    thetas = model.get_thetas()
    model.set_thetas(0.0)
    try:
        with torch.no_grad():
            plain = model(torch.tensor([ids]))[0][0].numpy()
    finally:
        model.set_thetas(thetas)
    assert np.abs(dense - plain).max() <= TOL and np.abs(dense - expected).max() > 1e-3  # θ changed something


def test_graph_synops_per_token_are_the_sites_macs_plus_the_head(model, graph):
    C, F, V = 96, 200, 53
    lora = 2 * C * (24 + 16 + 40) * 3 + 2 * C * 8 * 2  # w, a, g in every layer; v from layer 1 on
    assert graph.dense_synops_per_token() == 3 * (4 * C * C + 2 * C * F) + lora + C * V
    sites = [p for p in graph if p.kind == "threshold"]
    assert len(sites) == len(model.threshold_sites()) == 40


def test_per_head_kinds_split_by_heads_and_wkv7_counts_its_state(graph):
    kinds = {p.kind: model_class_for(p).split for p in graph}
    assert {k: kinds[k] for k in ("wkv7", "head_l2norm", "group_norm", "rwkv7_bonus")} == dict.fromkeys(
        ("wkv7", "head_l2norm", "group_norm", "rwkv7_bonus"), "heads")
    wkv = graph["L1.att.wkv"]
    assert isinstance(wkv, WKV7) and wkv.vars["state"].value.shape == (3, 32, 32)
    assert model_class_for(wkv)(wkv).entry_ops() == 9 * 32 + 1


def test_simulator_equals_torch_and_the_trace_engine(simulated, graph, ids, expected):
    name, mapping, sim, logits = simulated
    assert np.abs(logits - expected).max() <= TOL
    if name == "small":
        assert sorted((s.lo, s.hi) for s in mapping.shards if s.process == "L0.att.wkv") == [(0, 1), (1, 2), (2, 3)]
    ex = Executor(graph, probes=list(sim.port_offset))
    ex.run(ids)
    eng = TraceEngine(graph, mapping, load_costs("seneca"))
    eng.add(ids[:15], {p: ex.probed(p)[:15] != 0 for p in sim.port_offset if p != "emb.out"})
    eng.add(ids[15:], {p: ex.probed(p)[15:] != 0 for p in sim.port_offset if p != "emb.out"})
    np.testing.assert_array_equal(eng.result.counts, sim.result.counts)
    np.testing.assert_allclose(eng.result.energy_per_token, sim.result.energy_per_token, rtol=1e-9)
    np.testing.assert_allclose(eng.result.latency_per_token, sim.result.latency_per_token, rtol=1e-9)


def test_torch_masks_count_as_the_message_engine(simulated, model, graph, ids):
    _, mapping, sim, _ = simulated
    eng = TraceEngine(graph, mapping, load_costs("seneca"))
    for part, masks in event_masks(model, graph, ids, chunk=16):
        eng.add(part, masks)
    np.testing.assert_allclose(eng.result.counts.sum(0), sim.result.counts.sum(0), rtol=1e-4)


def test_work_does_not_depend_on_the_cut(graph, ids):
    totals = []
    for topo in ("seneca", SMALL_CORES):
        sim = Simulator(graph, map_graph(graph, topo), load_costs("seneca"))
        for t in ids[:5]:
            sim.step(t)
        totals.append(sim.result.counts.sum(0))
    for c in ("synops", "neuron_ops", "neuron_updates", "param_reads", "state_reads", "state_writes", "weight_reads"):
        assert totals[0][COUNTERS.index(c)] == totals[1][COUNTERS.index(c)], c


def test_saved_graph_loads_and_runs_bit_for_bit(graph, ids, tmp_path):
    again = ProcessGraph.load(graph.save(tmp_path / "g"))
    assert np.array_equal(Executor(again).run(ids[:8]), Executor(graph).run(ids[:8]))


def test_cli_evaluates_builds_maps_simulates_and_generates_a_blinkdl_pth(tmp_path, capsys):
    """A byte-level RWKV-7 .pth through the commands a user runs: evaluate → build → map → simulate (message and
    trace engines) → generate, whose sim backend gives torch's tokens (calibration: tests/test_rwkv7_sparsity.py)."""
    import json

    from eventllm.cli import main
    from eventllm.models.checkpoints import load_checkpoint, save_blinkdl
    from eventllm.sparsity.thresholds import thresholds_to_json

    cfg = RWKV7Config(vocab_size=256, d_model=64, n_layer=2, head_size=32, d_ffn=128, d_decay=16, d_iclr=16, d_value=8, d_gate=16)
    pth = str(save_blinkdl(RWKV7(cfg).randomize(seed=3), tmp_path / "r7.pth"))
    loaded = load_checkpoint(pth)
    loaded.set_thetas(0.05)
    thr, ev = tmp_path / "thr.json", str(tmp_path / "ev.json")
    thr.write_text(json.dumps(thresholds_to_json(loaded, pth)))
    thr = str(thr)
    text = tmp_path / "text.txt"
    text.write_text("The captain looked at the sky and the sea; the whale swam by the ship. " * 20)
    assert main(["evaluate", "--model", pth, "--thresholds", thr, "--data", str(text), "--split", "all",
                 "--max-tokens", "256", "--json", ev, "-q"]) == 0
    sparsity = json.loads(open(ev).read())["sparsity"]
    assert sparsity["mac_weighted"]["thresholded"] > sparsity["mac_weighted"]["natural"]
    assert sparsity["per_layer"][0]["att.v1"]["natural"] is None  # layer 0 has no value-residual LoRA
    g, m = str(tmp_path / "g"), str(tmp_path / "map.json")
    assert main(["build", "--model", pth, "--thresholds", thr, "-o", g]) == 0
    assert main(["map", g, "--topology", "seneca", "-o", m]) == 0
    energy = []
    for engine in ("message", "trace"):
        out = str(tmp_path / f"{engine}.json")
        assert main(["simulate", g, "--mapping", m, "--token-ids", "1,2,3,4,5,6,7,8", "--engine", engine, "--model", pth,
                     "--json", out]) == 0
        energy.append(json.loads(open(out).read())["energy_per_token_j"])
    assert energy[1] == pytest.approx(energy[0], rel=1e-4)
    replies = []
    for backend in ("sim", "torch"):
        out = str(tmp_path / f"{backend}.json")
        assert main(["generate", "--model", pth, "--thresholds", thr, "--backend", backend, "--prompt", "The whale",
                     "--max-tokens", "12", "--greedy", "--json", out, "-q"]) == 0
        replies.append(json.loads(open(out).read())["turns_text"])
    assert replies[0] == replies[1]
    capsys.readouterr()



@pytest.mark.parametrize("killed", [("att.g2", "att.v2", "ffn.value"), ("att.key", "att.value", "att.receptance")])
def test_sites_that_remove_whole_vectors_are_counted_by_the_trace_as_by_the_message_engine(ids, killed):
    """θ far above every input at some sites: the exact zeros after them, which the torch masks do not show, are
    counted by the trace engine as the message engine sends them — a Dense of no event sends nothing (W·0 = 0, no
    bias), a norm of zeros its bias, the lerp of two zeros nothing, a WKV-7 state never fed (k or v silent since the
    start) stays zero and so does its output: every counter equal, energy to rounding (the trace once took all
    those outputs as dense: energy +0.12% and +0.64%, events sent +7.6% and +22%)."""
    m = RWKV7(RWKV7Config(**CFG)).randomize(seed=2).eval()
    m.set_thetas({k: 100.0 if k[1] in killed else 0.03 for k in m.get_thetas()})
    g = build_graph(m)
    mapping = map_graph(g, "seneca")
    sim = Simulator(g, mapping, load_costs("seneca"))
    for t in ids[:12]:
        sim.step(t)
    sent = sim.port_events()
    silent = ["L1.ffn.value.out", "L2.att.g2.out"] if "att.g2" in killed else ["L0.att.wkv.out", "L2.att.v_residual.out"]
    assert all(sent[path] == 0 for path in silent)
    eng = TraceEngine(g, mapping, load_costs("seneca"))
    for part, masks in event_masks(m, g, ids[:12], chunk=5):
        eng.add(part, masks)
    np.testing.assert_array_equal(eng.result.counts, sim.result.counts)
    np.testing.assert_allclose(eng.result.energy_per_token, sim.result.energy_per_token, rtol=1e-9)
