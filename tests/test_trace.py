"""The trace engine counts what the message engine counts: same integer counters, energy and latency to 1e-9."""

from pathlib import Path

import numpy as np
import pytest

from eventllm.masks import event_masks, site_ports
from eventllm.models.registry import load_model
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.sparsity.thresholds import apply_thresholds
from mapping import map_graph
from sim.costs import load_costs
from sim.engine import Simulator
from sim.report import MODE_OVERRIDES, summarize
from sim.trace import TraceEngine

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 256


@pytest.fixture(scope="module", params=["rwkv4-tiny", "opt-tiny"])
def run(request):
    """A zoo model with its shipped θ on SENECA, 256 tokens of Moby-Dick through the message engine, and the
    executor's values of every out-port for the same tokens."""
    data = ROOT.parent / "shared" / "data" / "gutenberg" / "moby_dick.txt"
    if not data.exists():
        pytest.skip(f"shared data not found at {data}")
    name = request.param
    loaded = load_model(f"zoo:{name}")
    apply_thresholds(loaded.model, ROOT / "eventllm" / "zoo" / name / "thresholds.json")
    graph = build_graph(loaded.model.eval(), name=f"zoo:{name}")
    ids = loaded.tokenizer.encode(data.read_text()[20000:40000])[:TOKENS]
    mapping = map_graph(graph, "seneca")
    costs = load_costs("seneca")
    sim = Simulator(graph, mapping, costs)
    for t in ids:
        sim.step(t)
    ex = Executor(graph, probes=list(sim.port_offset))
    ex.run(ids)
    values = {path: ex.probed(path) for path in sim.port_offset}
    return {"name": name, "loaded": loaded, "graph": graph, "mapping": mapping, "costs": costs, "ids": ids, "sim": sim,
            "values": values}


def assert_same(a, b) -> None:
    """`a` and `b` (SimResult) agree: counters exactly, energy, latency and layer times to 1e-9 relative."""
    assert a.tokens == b.tokens
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.pair_packets, b.pair_packets)
    for field in ("energy_per_token", "latency_per_token", "layer_finish", "sparsity_per_token"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-9, atol=0, err_msg=field)


def trace(run, masks, chunks=(100, 156), event_driven=True) -> TraceEngine:
    eng = TraceEngine(run["graph"], run["mapping"], run["costs"], event_driven)
    s = 0
    for n in chunks:
        eng.add(run["ids"][s : s + n], {k: v[s : s + n] for k, v in masks.items()})
        s += n
    return eng


def test_trace_engine_equals_message_engine_given_the_executors_events(run):
    # every out-port's events except the embedding's, which the trace engine looks up in the graph's table
    masks = {p: v != 0 for p, v in run["values"].items() if p != "emb.out"}
    eng = trace(run, masks)
    assert_same(run["sim"].result, eng.result)
    a, b = summarize(run["sim"]), summarize(eng)
    for key in ("energy_per_token_j", "latency_per_token_s", "activation_sparsity"):
        assert b[key] == pytest.approx(a[key], rel=1e-9)
    assert b["counts_per_token"] == a["counts_per_token"]


def test_masks_of_the_threshold_sites_are_enough(run):
    # every other process of these models sends all its entries, so the data-dependent ports decide everything —
    # but for a value that comes out exactly 0.0 by chance (one WKV output of 98,304 in rwkv4-tiny with numpy 2.4's
    # OpenBLAS: the numerator cancels), which sends no event; those few ports get their masks too, and must be rare
    ports = {p for pair in site_ports(run["graph"]).values() for p in pair}
    others = {p: v for p, v in run["values"].items() if p not in ports and p != "emb.out"}
    chance = {p: v != 0 for p, v in others.items() if (v == 0).any()}
    zeros = sum(int((~m).sum()) for m in chance.values())
    dense_entries = sum(v.size for v in others.values())
    assert zeros <= 1e-5 * dense_entries, f"{zeros} zeros outside the threshold sites: {sorted(chance)}"
    eng = trace(run, {**{p: run["values"][p] != 0 for p in ports}, **chance}, chunks=(TOKENS,))
    assert_same(run["sim"].result, eng.result)


def test_dense_processor_run_equals_the_message_engine(run):
    graph, ids = run["graph"], run["ids"][:24]
    sim = Simulator(graph, run["mapping"], run["costs"], event_driven=False, overrides=MODE_OVERRIDES)
    for t in ids:
        sim.step(t)
    # the counts need no masks (every entry is processed); the sparsity figure still reports the zeros
    ports = sorted({p for pair in site_ports(graph).values() for p in pair})
    ex = Executor(graph, probes=ports, overrides=MODE_OVERRIDES)
    ex.run(ids)
    eng = TraceEngine(graph, run["mapping"], run["costs"], event_driven=False, overrides=MODE_OVERRIDES)
    eng.add(ids, {p: ex.probed(p) for p in ports})
    assert_same(sim.result, eng.result)


def test_torch_sequence_mode_masks_are_the_executors_but_for_rounding_at_theta(run):
    """torch in sequence mode (batched products, chunked WKV) rounds differently from the step-by-step numpy
    executor, so an activation within rounding of θ can fall on the other side: a few in 10^4 entries, deeper
    layers more; the counters move by a few parts in 10^6."""
    model, graph, ids = run["loaded"].model, run["graph"], run["ids"]
    ports = sorted({p for pair in site_ports(graph).values() for p in pair})
    got = {p: [] for p in ports}
    eng = TraceEngine(graph, run["mapping"], run["costs"])
    for part, masks in event_masks(model, graph, ids, chunk=100):
        eng.add(part, masks)
        for p in ports:
            got[p].append(masks[p])
    flips = sum(int(((run["values"][p] != 0) != np.concatenate(got[p])).sum()) for p in ports)
    entries = sum(run["values"][p].size for p in ports)
    assert flips / entries < 1e-3
    ref = run["sim"].result.counts.sum(0)
    np.testing.assert_allclose(eng.result.counts.sum(0), ref, rtol=1e-4)
    assert np.mean(eng.result.energy_per_token) == pytest.approx(np.mean(run["sim"].result.energy_per_token), rel=1e-4)


def test_a_value_site_that_removes_whole_vectors_keeps_rwkv4s_wkv_silent_across_sequences(small_rwkv):
    """RWKV-4 with θ far above every value input: the WKV's numerator state never leaves zero, so the WKV sends no
    event (the masks do not show it; the trace engine knows it from the kind's `quiet_state_inputs`), in a second
    sequence as in the first (`new_sequence`): every counter equal to the message engine's."""
    model = small_rwkv
    model.set_thetas({k: 100.0 if k[1] == "att.value" else 0.05 for k in model.get_thetas()})
    graph = build_graph(model)
    mapping = map_graph(graph, "seneca")
    costs = load_costs("seneca")
    texts = [[5, 9, 2, 40, 33, 7, 1], [8, 8, 63, 0, 12]]
    eng = TraceEngine(graph, mapping, costs)
    counts = 0
    for ids in texts:
        sim = Simulator(graph, mapping, costs)  # a fresh state, as the trace engine's new sequence
        for t in ids:
            sim.step(t)
        assert sim.port_events()["L0.att.wkv.out"] == 0
        counts = counts + sim.result.counts
        eng.new_sequence()
        for part, masks in event_masks(model, graph, ids, chunk=3):
            eng.add(part, masks)
    np.testing.assert_array_equal(eng.result.counts, counts)
