"""Low-bit weights and events: integer Dense = fake-quant torch, memory by bits, costs by bits, clear errors."""

import numpy as np
import pytest
import torch

from eventllm.errors import ConfigError, GraphError
from eventllm.models.quantize import quantize_model, quantize_weight
from eventllm.models.registry import load_model
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Dense, Embedding, Threshold
from eventllm.sparsity.thresholds import apply_thresholds
from tests.conftest import DATA
from tests.test_process import SHIPPED_THRESHOLDS, torch_step_logits


def test_round_to_nearest_per_output_channel_by_hand():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [0.03, 0.01, -0.02, 0.0]])
    q, s = quantize_weight(w, 8)
    assert s.tolist() == pytest.approx([1.0 / 127, 0.03 / 127])
    assert q.tolist() == [[64, -127, 32, 0], [127, 42, -85, 0]]  # 0.5·127 = 63.5 → 64 (half to even), 0.01/0.03·127 = 42.3
    q4, s4 = quantize_weight(w, 4)
    assert s4.tolist() == pytest.approx([1.0 / 7, 0.03 / 7]) and q4.tolist() == [[3, -7, 2, 0], [7, 2, -5, 0]]  # 0.5 / (1/7) = 3.4999998 in float32


def test_mse_clipping_beats_round_to_nearest_at_4_bits():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    err = {}
    for method in ("rtn", "mse"):
        q, s = quantize_weight(w, 4, method)
        err[method] = float(((q.float() * s[:, None]) - w).square().sum())
    assert err["mse"] < 0.9 * err["rtn"]


@pytest.mark.parametrize("weight_bits,event_bits", [(8, 16), (4, 16), (8, 8)])
def test_integer_graph_equals_fake_quant_torch_over_64_tokens(weight_bits, event_bits):
    model = load_model("zoo:rwkv4-tiny").model.eval()
    apply_thresholds(model, SHIPPED_THRESHOLDS)
    quantize_model(model, weight_bits, "mse", event_bits=event_bits)
    apply_thresholds(model, SHIPPED_THRESHOLDS)  # the fingerprint is the trained model's: its thresholds still apply
    graph = build_graph(model)
    dense = [p for p in graph if p.kind == "dense"]
    assert all(p.vars["weights"].value.dtype == np.int8 and p.weight_bits == weight_bits for p in dense)
    assert graph.meta["precision"]["weight_bits"] == weight_bits and graph.meta["precision"]["event_bits"] == event_bits
    tokens = torch.randint(0, 8000, (64,), generator=torch.Generator().manual_seed(0)).tolist()
    ref, meter = torch_step_logits(model, tokens)
    ex = Executor(graph)
    got = ex.run(tokens)
    diff = np.abs(got - ref)
    if event_bits == 16:
        assert diff.max() <= 1e-4
        for (layer, proj), n in meter.elements.items():  # the same events
            assert ex.counts.per_process[f"L{layer}.{proj}.threshold"]["events_out"] == n - meter.zeros[(layer, proj)]
    else:
        # An int8 event whose value/scale lies within float rounding of a half step may round the other way (one step,
        # 1/127 of that token's largest event) and the recurrent state carries the difference on: the tokens before
        # the first such flip agree within 1e-4, later logits within a few hundredths, and the predictions agree.
        assert diff[0].max() <= 1e-4
        assert diff.max() <= 0.5 and (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_int8_events_are_integers_times_one_scale_and_equal_torch():
    from eventllm.models.threshold import quantize_events
    from eventllm.process.models import model_for

    x = np.random.default_rng(0).normal(size=512).astype(np.float32)
    y = model_for(Threshold("t", n=512, theta=0.5, event_bits=8)).run({"inp": x})["out"]
    s = np.abs(np.where(np.abs(x) > 0.5, x, 0)).max() / np.float32(127)
    q = y / s
    assert np.allclose(q, np.round(q), atol=1e-3) and np.abs(np.round(q)).max() == 127
    assert len(np.unique(y)) <= 255 and np.all((y == 0) == (np.round(q) == 0))
    t = torch.from_numpy(np.where(np.abs(x) > 0.5, x, 0).astype(np.float32))
    assert np.array_equal(quantize_events(t, 8).numpy(), y)  # the same float32 operations, bit for bit


def test_a_quantised_graph_saves_and_loads_bit_exactly(small_rwkv, tmp_path):
    quantize_model(small_rwkv, 4, "rtn")
    g = build_graph(small_rwkv)
    g.save(tmp_path / "g")
    back = ProcessGraph.load(tmp_path / "g")
    for p in g:
        for n, v in p.vars.items():
            assert back[p.name].vars[n].value.dtype == v.value.dtype and np.array_equal(back[p.name].vars[n].value, v.value)
    tokens = list(range(10))
    assert np.array_equal(Executor(g).run(tokens), Executor(back).run(tokens))


@pytest.mark.parametrize("model_name", ["small_rwkv", "small_opt"])
def test_a_quantised_model_is_stored_as_integers_and_loads_as_it_ran(model_name, tmp_path, request, tokens):
    from safetensors import safe_open

    from eventllm.models.checkpoints import SCALE_SUFFIX, load_checkpoint, save_eventllm
    from eventllm.models.quantize import apply_precision

    model = request.getfixturevalue(model_name)
    trained = model.fingerprint()
    quantize_model(model, 8, "mse", event_bits=8)
    path = save_eventllm(model, tmp_path / "q.safetensors")
    with safe_open(str(path), framework="pt") as f:
        ints = [k for k in f.keys() if f.get_slice(k).get_dtype() == "I8"]
        assert ints and all(k + SCALE_SUFFIX in f.keys() for k in ints)
        assert len(ints) == sum(len(mods) for (_, p), mods in model.projection_linears().items()
                                if not (p == "head" and getattr(model, "head_tied", False))) + (0 if getattr(model, "head_tied", False) else 1)
    back = load_checkpoint(path)
    assert back.fingerprint() == trained  # the trained weights' print: their thresholds files apply
    assert {k: v for k, v in back.quantization.items() if k != "scales"} == \
        {k: v for k, v in model.quantization.items() if k != "scales"}
    for (k, v), (k2, v2) in zip(sorted(model.state_dict().items()), sorted(back.state_dict().items())):
        assert k == k2 and torch.allclose(v2, v, rtol=1e-6, atol=0), k  # scale·Q again, within a float's rounding
    with torch.no_grad():
        assert torch.allclose(back(tokens[:, :20])[0], model(tokens[:, :20])[0], atol=1e-4)
    apply_precision(back, {"weight_bits": 8, "event_bits": 8})  # its own precision: nothing to do
    with pytest.raises(ConfigError, match="holds 8-bit weights with 8-bit events, not 16/16"):
        apply_precision(back, {"weight_bits": 16, "event_bits": 16})


def test_bad_quantisation_inputs_are_one_clear_error(small_rwkv):
    with pytest.raises(ConfigError, match="use one of 16, 8, 4"):
        quantize_model(small_rwkv, 3)
    with pytest.raises(ConfigError, match="not a projection"):
        quantize_model(small_rwkv, 8, projections=["att.nothing"])
    quantize_model(small_rwkv, 8)
    with pytest.raises(ConfigError, match="quantised already"):
        quantize_model(small_rwkv, 4)
    with pytest.raises(GraphError, match="integers in"):
        Dense("d", weights=np.full((2, 2), 9, np.int8), scale=[1.0, 1.0], weight_bits=4)


def test_selected_projections_only(small_rwkv):
    quantize_model(small_rwkv, 8, projections=["ffn.key", "ffn.value"])
    g = build_graph(small_rwkv)
    quantised = {p.attrs["projection"] for p in g if p.kind == "dense" and p.weight_bits == 8}
    assert quantised == {"ffn.key", "ffn.value"}
    assert g["head"].weight_bits == 16


def test_memory_per_core_at_each_bit_width_equals_a_hand_count():
    """A Dense of 4 outputs × 6 inputs with 4 scales, on a SENECA core (16-bit words): weights at their bits,
    scales, inputs and outputs at 2 bytes each."""
    from mapping.partition import partition
    from mapping.topology import load_topology

    topo = load_topology("seneca")
    w = np.arange(24, dtype=np.float32).reshape(4, 6) - 12
    q = np.clip(w, -7, 7).astype(np.int8)
    for bits, dense, weight_bytes in ((16, Dense("d", weights=w), 48), (8, Dense("d", weights=q, scale=np.ones(4), weight_bits=8), 24 + 8),
                                     (4, Dense("d", weights=q, scale=np.ones(4), weight_bits=4), 12 + 8)):
        graph = ProcessGraph([dense], "d.out")
        (shard,) = partition(graph, topo)
        assert shard.param_bytes == weight_bytes, bits
        assert shard.buffer_bytes == 2 * (6 + 4)


@pytest.mark.parametrize("weight_bits,event_bits", [(16, 16), (8, 8), (4, 8), (8, 16)])
def test_synaptic_counts_and_energy_by_precision_equal_a_hand_count(weight_bits, event_bits):
    """emb row [0.5, -1.0, 0.25, 0.0, 0.75, 0.0] → threshold (θ = 0.3: 3 events) → Dense 10 × 6 on one SENECA core."""
    from mapping import map_graph
    from sim.costs import load_costs
    from sim.engine import COUNTERS, Simulator

    e = Embedding("emb", weights=np.array([[0.5, -1.0, 0.25, 0.0, 0.75, 0.0]]))
    t = Threshold("t", n=6, theta=0.3, event_bits=event_bits)
    w = np.tile(np.arange(-3, 3, dtype=np.float32), (10, 1))
    d = Dense("d", weights=w) if weight_bits == 16 else Dense("d", weights=w.astype(np.int8), scale=np.full(10, 0.5), weight_bits=weight_bits)
    e.out.connect(t.inp)
    t.out.connect(d.inp)
    graph = ProcessGraph([e, t, d], "d.out")
    m = map_graph(graph, "seneca")
    sim = Simulator(graph, m, load_costs("seneca"))
    sim.step(0)
    c = dict(zip(COUNTERS, sim.result.counts.sum(0)))
    macs = 3 * 10  # 3 events × 10 rows
    words = {16: 10, 8: 5, 4: 3}[weight_bits]  # a 10-weight row segment in 16-bit words (4-bit: ceil(40 / 16))
    assert c["synops"] + c["synops_int8"] == macs
    assert c["synops_int8"] == (macs if weight_bits < 16 and event_bits == 8 else 0)
    assert c["weight_reads"] == 3 * words + 6  # + the embedding row
    unpacks = {(16, 16): 0, (8, 8): 0, (4, 8): 1, (8, 16): 2}[(weight_bits, event_bits)] * macs
    assert c["weight_unpacks"] == unpacks
    scale_ops = {(16, 16): 0, (8, 8): 3, (4, 8): 3, (8, 16): 1}[(weight_bits, event_bits)] * 10
    threshold_ops = (4 if event_bits == 8 else 1) * 6
    assert c["neuron_ops"] == threshold_ops + scale_ops
    assert c["param_reads"] == 1 + (10 if weight_bits < 16 else 0)  # θ, the scales
    mac_pj = 0.6 if c["synops_int8"] else 1.4
    pj = (macs * mac_pj + c["weight_reads"] * 3.7 + unpacks * 1.15 + c["neuron_ops"] * 1.4 + c["param_reads"] * 3.7
          + c["events_in"] * 0.5 + c["events_out"] * 1.1 + c["hops"] * 2.0)
    assert sim.result.energy_per_token[0] == pytest.approx(pj * 1e-12)


def test_simulate_compare_dense_json_says_its_settings_and_uses_a_16_bit_dense_baseline(tmp_path):
    import json

    from eventllm.cli import main

    g, m, out = tmp_path / "g", tmp_path / "m.json", tmp_path / "s.json"
    assert main(["build", "--model", "zoo:rwkv4-tiny", "--thresholds", str(SHIPPED_THRESHOLDS), "--weight-bits", "8",
                 "--event-bits", "8", "--tokens", "8", "-o", str(g)]) == 0
    assert main(["map", str(g), "-o", str(m), "--no-heatmap"]) == 0
    assert main(["simulate", str(g), "--mapping", str(m), "--compare-dense", "--token-ids", "5,6,7", "--json", str(out), "-q"]) == 0
    d = json.loads(out.read_text())
    assert d["settings"]["weight_bits"] == 8 and d["settings"]["event_bits"] == 8 and d["settings"]["head_threshold"] is False
    assert d["energy_ratio"] == pytest.approx(d["dense"]["energy_per_token_j"] / d["energy_per_token_j"])
    assert d["latency_ratio"] == pytest.approx(d["dense"]["latency_per_token_s"] / d["latency_per_token_s"])
    # the dense baseline is the 16-bit model: twice the weight memory, so more cores, and FP16 MACs only
    assert d["dense"]["cores_used"] > d["cores_used"]
    assert d["dense"]["counts_per_token"]["synops_int8"] == 0 and d["counts_per_token"]["synops_int8"] > 0
    # only the head takes float events (from its LayerNorm): its MACs stay FP16, after unpacking its int8 weights
    assert d["counts_per_token"]["synops"] == d["by_process"]["head"]["synops"] > 0


def test_a_thresholds_file_carries_its_precision(tmp_path, capsys):
    """calibrate --weight-bits 8 records it; the file then runs at 8 bits, and asking for other bits is one error line."""
    from eventllm.cli import main
    from eventllm.pipeline import load

    out = tmp_path / "t.json"
    assert main(["calibrate", "--model", "zoo:rwkv4-tiny", "--data", str(DATA / "gutenberg" / "poe_works.txt"), "--weight-bits", "8",
                 "--tokens", "256", "--context", "64", "--check-tokens", "512", "--target-sparsity", "0.3", "-o", str(out), "-q"]) == 0
    loaded = load("zoo:rwkv4-tiny", out)
    assert loaded.model.quantization["weight_bits"] == 8
    capsys.readouterr()
    assert main(["evaluate", "--model", "zoo:rwkv4-tiny", "--thresholds", str(out), "--weight-bits", "4",
                 "--data", str(DATA / "gutenberg" / "poe_works.txt"), "--max-tokens", "64", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "calibrated at weight bits 8, not 4" in err


def test_head_threshold_calibrated_saved_applied_and_built(tmp_path):
    """calibrate --head adds a site before the output head; its file turns the site on; graph = torch, events exact."""
    from eventllm.cli import main
    from eventllm.sparsity.thresholds import read_thresholds

    out = tmp_path / "t.json"
    assert main(["calibrate", "--model", "zoo:rwkv4-tiny", "--data", str(DATA / "gutenberg" / "poe_works.txt"), "--head",
                 "--tokens", "256", "--context", "64", "--check-tokens", "512", "--target-sparsity", "0.4", "-o", str(out), "-q"]) == 0
    assert read_thresholds(out)["head"] > 0
    model = load_model("zoo:rwkv4-tiny").model.eval()
    assert not model.head_threshold
    apply_thresholds(model, out)
    assert model.head_threshold and (model.n_layer, "head") in model.get_thetas()
    graph = build_graph(model)
    assert graph["head"].in_ports["inp"].sources[0].src.process.name == "head.threshold"
    tokens = torch.randint(0, 8000, (32,), generator=torch.Generator().manual_seed(0)).tolist()
    ref, meter = torch_step_logits(model, tokens)
    ex = Executor(graph)
    assert np.abs(ex.run(tokens) - ref).max() <= 1e-4
    n = meter.elements[(model.n_layer, "head")]
    assert 0 < ex.counts.per_process["head.threshold"]["events_out"] == n - meter.zeros[(model.n_layer, "head")] < n
    apply_thresholds(model, SHIPPED_THRESHOLDS)  # a file without "head" turns the site off again
    assert not model.head_threshold and "head.threshold" not in build_graph(model).processes


def test_the_full_precision_baseline_dequantises_every_integer_table(small_rwkv):
    quantize_model(small_rwkv, 8, event_bits=8)
    g = build_graph(small_rwkv)
    assert g["emb"].vars["weights"].value.dtype == np.int8 and g.precision()["weight_bits"] == 8
    full = g.at_full_precision()
    assert full.precision() == {"weight_bits": 16, "event_bits": 16, "low_bit_projections": []}
    assert all("scale" not in p.vars for p in full)
    tokens = list(range(12))
    # the same weights in float (events not quantised): close to the integer graph's output
    assert np.abs(Executor(full).run(tokens) - Executor(g).run(tokens)).max() < 0.5


def test_a_head_site_turned_on_after_quantising_sends_int8_events_too(tmp_path):
    """pipeline.load quantises first and applies the thresholds file after: its head site must get the event bits."""
    from eventllm.pipeline import load

    model = load_model("zoo:rwkv4-tiny").model
    apply_thresholds(model, SHIPPED_THRESHOLDS)
    model.set_head_threshold(True)
    model.set_thetas({(model.n_layer, "head"): 0.1})
    from eventllm.sparsity.thresholds import save_thresholds

    f = save_thresholds(model, tmp_path / "t.json", "zoo:rwkv4-tiny")
    loaded = load("zoo:rwkv4-tiny", f, precision={"weight_bits": 8, "event_bits": 8})
    assert loaded.model.head_threshold and loaded.model.head_in.event_bits == 8
    assert build_graph(loaded.model)["head.threshold"].attrs["event_bits"] == 8
