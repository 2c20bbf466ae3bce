"""Delta events (sigma-delta): exact semantics by hand, θ_Δ = 0 equals the plain model, costs and memory by hand,
the settings it is reported under, and clear errors where it is not supported."""

import json

import numpy as np
import pytest

from eventllm.errors import GraphError
from eventllm.models.registry import load_model
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Dense, Embedding, Threshold
from eventllm.process.models import model_for
from eventllm.sparsity.thresholds import apply_thresholds
from tests.test_process import SHIPPED_THRESHOLDS, torch_step_logits


def _site_and_receiver(theta=0.5, delta=0.1, event_bits=16):
    """table rows → Threshold(θ, θ_Δ) → Dense 2 × 3 (accumulating)."""
    rows = np.array([[1.0, 0.2, -2.0], [1.05, 0.9, 0.0], [1.3, 0.9, -0.6]], dtype=np.float32)
    e = Embedding("emb", weights=rows)
    t = Threshold("t", n=3, theta=theta, delta=delta, event_bits=event_bits)
    d = Dense("d", weights=np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]), accumulate=True)
    e.out.connect(t.inp)
    t.out.connect(d.inp)
    return ProcessGraph([e, t, d], "d.out"), rows


def test_delta_site_sends_changes_above_theta_delta_and_the_receiver_sums_them_by_hand():
    graph, rows = _site_and_receiver()
    ex = Executor(graph, probes=["t.out"])
    outs = ex.run([0, 1, 2])
    sent = np.stack(ex.probes["t.out"])
    # token 0: y = [1, 0, -2] (0.2 ≤ θ); x̂ = 0 → d = y, all of |d| > 0.1 sent
    # token 1: y = [1.05, 0.9, 0]; d = [0.05, 0.9, 2]: 0.05 ≤ θ_Δ is not sent; x̂ = [1, 0.9, 0]
    # token 2: y = [1.3, 0.9, -0.6]; d = [0.3, 0, -0.6]; x̂ = [1.3, 0.9, -0.6]
    assert np.allclose(sent, [[1.0, 0.0, -2.0], [0.0, 0.9, 2.0], [0.3, 0.0, -0.6]])
    w = graph["d"].vars["weights"].value
    x_hat = np.array([[1.0, 0.0, -2.0], [1.0, 0.9, 0.0], [1.3, 0.9, -0.6]])
    assert np.allclose(outs, x_hat @ w.T)  # the receiver holds W·x̂
    assert [ex.counts.per_process["t"]["events_out"]] == [2 + 2 + 2]


def test_with_theta_delta_zero_the_outputs_equal_the_plain_model_over_64_tokens():
    """zoo:rwkv4-tiny with its shipped thresholds: the delta graph's logits equal the plain graph's and torch's."""
    model = load_model("zoo:rwkv4-tiny").model.eval()
    apply_thresholds(model, SHIPPED_THRESHOLDS)
    plain = build_graph(model)
    delta = plain.with_delta_events(0.0)
    assert len(delta.delta_sites()) == sum(p.kind == "threshold" for p in plain)
    assert all(p.accumulates for p in delta if p.kind == "dense" and p.in_ports["inp"].sources[0].src.process.kind == "threshold")
    tokens = np.random.default_rng(0).integers(0, 8000, 64).tolist()
    ref, _ = torch_step_logits(model, tokens)
    got = Executor(delta).run(tokens)
    assert np.abs(got - Executor(plain).run(tokens)).max() <= 1e-4
    assert np.abs(got - ref).max() <= 1e-4


def test_int8_delta_events_are_integers_times_one_scale_and_the_site_tracks_what_it_sent():
    x = np.random.default_rng(1).normal(size=(4, 256)).astype(np.float32)
    m = model_for(Threshold("t", n=256, theta=0.3, delta=0.2, event_bits=8))
    total = np.zeros(256)
    for row in x:
        y = m.run({"inp": row})["out"]
        s = np.abs(y).max() / 127
        assert np.allclose(y / s, np.round(y / s), atol=1e-3)
        total += y
        assert np.array_equal(m.v["sent"], total)  # x̂ is exactly the sum of the events sent


def test_delta_costs_and_memory_equal_a_hand_count():
    """The receiver keeps 2 sums and the site 3 values of x̂, each 32-bit (two 16-bit words): per token both are
    read and written back, the receiver adds the token's sums (1 op per output), the site does 1 + 3 ops per entry."""
    from mapping import map_graph
    from mapping.partition import partition
    from mapping.topology import load_topology
    from sim.costs import load_costs
    from sim.engine import COUNTERS, Simulator

    graph, _ = _site_and_receiver()
    shards = {s.process: s for s in partition(graph, load_topology("seneca"))}
    assert shards["d"].state_bytes == 2 * 2 * 2 and shards["t"].state_bytes == 3 * 2 * 2
    plain = graph.with_delta_events(None)
    assert not plain.delta_sites() and "acc" not in plain["d"].vars and partition(plain, load_topology("seneca"))[2].state_bytes == 0
    sim = Simulator(graph, map_graph(graph, "seneca"), load_costs("seneca"))
    for tok in (0, 1):
        sim.step(tok)
    c = {p: dict(zip(COUNTERS, sim.result.counts[sim.shards_of[p]].sum(0))) for p in ("t", "d")}
    assert c["t"]["neuron_ops"] == 2 * 3 * (1 + 3)
    assert c["t"]["state_reads"] == c["t"]["state_writes"] == 2 * 3 * 2
    assert c["d"]["state_reads"] == c["d"]["state_writes"] == 2 * 2 * 2
    assert c["d"]["neuron_ops"] == 2 * 2
    assert c["d"]["synops"] == (2 + 2) * 2  # events × fan-out


def test_an_accumulating_dense_is_cut_by_outputs_only():
    """8 outputs × 4096 inputs on 48 KiB cores: plain, the mapper cuts it by inputs (fewer events); a delta receiver
    would then send every shard's kept partial sums every token, so it is cut by outputs."""
    from mapping.partition import partition
    from mapping.topology import parse_topology

    e = Embedding("emb", weights=np.ones((2, 4096)))
    t = Threshold("t", n=4096, delta=0.0)
    d = Dense("d", weights=np.ones((8, 4096)), accumulate=True)
    e.out.connect(t.inp)
    t.out.connect(d.inp)
    g = ProcessGraph([e, t, d], "d.out")
    topo = parse_topology({"core": {"memory_bytes": 49152, "word_bits": 16, "npe": 1, "clock_hz": 1e8},
                           "mesh": {"rows": 8, "cols": 8}}, "test")
    assert {s.split for s in partition(g, topo) if s.process == "d"} == {"outputs"}
    assert {s.split for s in partition(g.with_delta_events(None), topo) if s.process == "d"} == {"inputs"}


def test_an_int8_delta_receiver_holds_scale_times_q_times_x_hat():
    """int8 weights, int8 delta events: the receiver's output is scale ⊙ (Q · x̂), x̂ the sum of the events sent."""
    rng = np.random.default_rng(2)
    e = Embedding("emb", weights=rng.normal(size=(5, 16)).astype(np.float32))
    t = Threshold("t", n=16, theta=0.3, delta=0.1, event_bits=8)
    q = rng.integers(-127, 128, (6, 16)).astype(np.int8)
    scale = np.linspace(0.01, 0.02, 6)
    d = Dense("d", weights=q, scale=scale, weight_bits=8, accumulate=True)
    e.out.connect(t.inp)
    t.out.connect(d.inp)
    ex = Executor(ProcessGraph([e, t, d], "d.out"), probes=["t.out"])
    outs = ex.run([0, 3, 1, 4, 2])
    x_hat = np.cumsum(np.stack(ex.probes["t.out"]).astype(np.float64), axis=0)
    np.testing.assert_allclose(outs, (x_hat @ q.T.astype(np.float64)) * scale, rtol=1e-5, atol=1e-6)


def test_delta_sites_and_accumulators_come_in_pairs():
    t = Threshold("t", n=3, delta=0.0)
    d = Dense("d", weights=np.ones((2, 3)))
    t.out.connect(d.inp)
    with pytest.raises(GraphError, match="does not keep its summed output"):
        ProcessGraph([t, d], "d.out")
    t2 = Threshold("t2", n=3)
    d2 = Dense("d2", weights=np.ones((2, 3)), accumulate=True)
    t2.out.connect(d2.inp)
    with pytest.raises(GraphError, match="not fed by a delta-event site"):
        ProcessGraph([t2, d2], "d2.out")


def test_a_delta_graph_saves_loads_and_reports_its_settings(tmp_path, small_rwkv):
    from sim.report import settings

    g = build_graph(small_rwkv).with_delta_events(0.05, ["ffn.key", "att.output"])
    assert {g[n].attrs["projection"] for n in g.delta_sites()} == {"ffn.key", "att.output"}
    g.save(tmp_path / "g")
    back = ProcessGraph.load(tmp_path / "g")
    assert back.delta_sites() == g.delta_sites()
    assert np.array_equal(Executor(g).run(range(12)), Executor(back).run(range(12)))
    s = settings(back)
    assert s["delta_events"] == {"sites": 2 * 3, "theta_delta": [0.05]}
    assert not back.plain().delta_sites() and settings(back.plain())["delta_events"] is False


def test_build_delta_cli_and_compare_dense_against_the_plain_dense_model(tmp_path, capsys):
    from eventllm.cli import main

    g, m, out = tmp_path / "g", tmp_path / "m.json", tmp_path / "s.json"
    assert main(["build", "--model", "zoo:rwkv4-tiny", "--thresholds", str(SHIPPED_THRESHOLDS), "--delta", "0.1",
                 "--tokens", "8", "-o", str(g)]) == 0
    assert main(["map", str(g), "-o", str(m), "--no-heatmap"]) == 0
    assert main(["simulate", str(g), "--mapping", str(m), "--compare-dense", "--token-ids", "5,6,7,8", "--json", str(out), "-q"]) == 0
    d = json.loads(out.read_text())
    assert d["settings"]["delta_events"]["theta_delta"] == [0.1]
    assert d["dense"]["counts_per_token"]["state_reads"] < d["counts_per_token"]["state_reads"]  # no kept sums in the baseline
    capsys.readouterr()
    assert main(["build", "--model", "zoo:rwkv4-tiny", "--delta", "0.1", "--delta-projections", "ffn.nothing",
                 "--tokens", "8", "-o", str(tmp_path / "g2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ffn.nothing" in err and "ffn.key" in err
    assert main(["simulate", str(g), "--mapping", str(m), "--engine", "trace", "--token-ids", "5,6", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--engine message" in err
    assert main(["build", "--model", "zoo:rwkv4-tiny", "--delta-projections", "ffn.key", "-o", str(tmp_path / "g3")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give --delta" in err
    # a mapping made for the plain graph is refused for the delta graph (its kept sums need memory)
    assert main(["build", "--model", "zoo:rwkv4-tiny", "--thresholds", str(SHIPPED_THRESHOLDS), "--tokens", "8",
                 "-o", str(tmp_path / "plain")]) == 0
    assert main(["map", str(tmp_path / "plain"), "-o", str(tmp_path / "pm.json"), "--no-heatmap"]) == 0
    capsys.readouterr()
    assert main(["simulate", str(g), "--mapping", str(tmp_path / "pm.json"), "--token-ids", "5", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "re-run `eventllm map`" in err


def test_bad_delta_settings_are_clear_errors(small_rwkv):
    with pytest.raises(GraphError, match="non-negative"):
        Threshold("t", n=3, delta=-0.1)
    with pytest.raises(GraphError, match="non-negative"):
        build_graph(small_rwkv).with_delta_events(float("nan"))
