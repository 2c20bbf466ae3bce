"""The event-driven process graph: wiring errors, exact execution against torch, event counts, save/load."""

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eventllm.errors import GraphError
from eventllm.models.registry import load_model
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Add, Dense, Embedding, Threshold
from eventllm.evaluate.sparsity_stats import SparsityMeter

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_THRESHOLDS = ROOT / "eventllm" / "zoo" / "rwkv4-tiny" / "thresholds.json"


def torch_step_logits(model, tokens):
    """Reference: the torch model in step (recurrent) mode, with the sparsity meter attached."""
    state = model.init_state()
    out = []
    with SparsityMeter(model) as meter:
        for t in tokens:
            logits, state = model.step(int(t), state)
            out.append(logits.numpy())
    return np.stack(out), meter


@pytest.fixture(scope="module")
def zoo_rwkv():
    return load_model("zoo:rwkv4-tiny").model.eval()


# --- wiring -------------------------------------------------------------------------------------------------
def test_connect_rejects_a_size_mismatch_naming_both_ports():
    t = Threshold("t", n=4)
    d = Dense("d", weights=np.ones((2, 3)))
    with pytest.raises(GraphError, match=r"t\.out \(size 4\) to d\.inp \(size 3\)"):
        t.out.connect(d.inp)


def test_an_in_port_takes_one_source():
    a, b, c = Threshold("a", n=2), Threshold("b", n=2), Threshold("c", n=2)
    a.out.connect(c.inp)
    with pytest.raises(GraphError, match="already fed by a.out"):
        b.out.connect(c.inp)


def test_unconnected_in_port_is_an_error_at_run_time():
    e = Embedding("emb", weights=np.eye(3))
    add = Add("add", n=3)
    e.out.connect(add.a)
    g = ProcessGraph([e, add], "add.out")
    with pytest.raises(GraphError, match=r"add\.b is not connected"):
        Executor(g).step(0)


def test_nan_weights_are_refused():
    with pytest.raises(GraphError, match="NaN"):
        Dense("d", weights=np.array([[1.0, np.nan]]))


def test_token_outside_vocabulary_is_a_clear_error():
    g = runpy.run_path(str(ROOT / "examples" / "build_graph_by_hand.py"))["build"]()
    with pytest.raises(GraphError, match="outside the vocabulary"):
        Executor(g).step(9)


# --- hand calculation ---------------------------------------------------------------------------------------
def test_hand_built_two_layer_graph_gives_hand_computed_output_and_counts():
    out = runpy.run_path(str(ROOT / "examples" / "build_graph_by_hand.py"))["main"]()
    # emb row 1 = [0.2, -0.9, 1.5]; θ = 0.5 keeps 2 events; hidden = [1.5, -0.9] (2 events × 2 rows = 4 synops);
    # relu = [1.5, 0] (1 event); out = [2·1.5, 1·1.5] (1 event × 2 rows = 2 synops)
    assert out["output"].tolist() == [3.0, 1.5]
    c = out["counts"]
    assert c["gate"] == {"events_in": 3, "events_out": 2, "synops": 0, "neuron_ops": 3}
    assert c["hidden"]["synops"] == 4 and c["hidden"]["events_out"] == 2
    assert c["relu"]["events_out"] == 1
    assert c["out"]["synops"] == 2 and c["out"]["events_in"] == 1


# --- exact execution ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("thresholds", ["zero", "calibrated"])
def test_executor_matches_torch_recurrent_logits_on_zoo_rwkv(zoo_rwkv, thresholds):
    if thresholds == "calibrated":
        assert SHIPPED_THRESHOLDS.exists(), "the zoo ships calibrated thresholds"
        from eventllm.sparsity.thresholds import apply_thresholds

        apply_thresholds(zoo_rwkv, SHIPPED_THRESHOLDS)
        graph = build_graph(zoo_rwkv)
    else:
        zoo_rwkv.set_thetas(0.0)
        graph = build_graph(zoo_rwkv)
    tokens = torch.randint(0, 8000, (64,), generator=torch.Generator().manual_seed(0)).tolist()
    ref, meter = torch_step_logits(zoo_rwkv, tokens)
    ex = Executor(graph)
    got = ex.run(tokens)
    assert np.abs(got - ref).max() <= 1e-4
    # every threshold process emits exactly the non-zero entries the torch model's threshold left
    for (layer, proj), n in meter.elements.items():
        assert ex.counts.per_process[f"L{layer}.{proj}.threshold"]["events_out"] == n - meter.zeros[(layer, proj)]
    if thresholds == "calibrated":
        assert any(p.theta > 0 for p in graph if p.kind == "threshold")
    zoo_rwkv.set_thetas(0.0)


def test_executor_matches_torch_on_a_random_opt(small_opt):
    small_opt.set_thetas({(i, p): 0.1 * (k + 1) for i in range(small_opt.n_layer) for k, p in enumerate(small_opt.PROJECTIONS)})
    tokens = torch.randint(0, 64, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    ref, meter = torch_step_logits(small_opt, tokens)
    ex = Executor(build_graph(small_opt))
    assert np.abs(ex.run(tokens) - ref).max() <= 1e-4
    for (layer, proj), n in meter.elements.items():
        assert ex.counts.per_process[f"L{layer}.{proj}.threshold"]["events_out"] == n - meter.zeros[(layer, proj)]


def test_opt_graph_refuses_tokens_past_its_positions(small_opt):
    ex = Executor(build_graph(small_opt))
    ex.run(list(range(64)) * 2)
    with pytest.raises(GraphError, match="128 positions"):
        ex.step(0)


def test_dense_synops_count_one_per_input_event_per_output_row(small_rwkv):
    small_rwkv.set_thetas(0.3)
    graph = build_graph(small_rwkv)
    ex = Executor(graph, probes=["L1.ffn.key.threshold.out"])
    ex.run([3, 1, 4, 1, 5])
    events = int(np.count_nonzero(ex.probed("L1.ffn.key.threshold.out")))
    assert ex.counts.per_process["L1.ffn.key"]["synops"] == events * small_rwkv.config.d_ffn


def test_state_persists_across_tokens_and_reset_restarts(small_rwkv):
    ex = Executor(build_graph(small_rwkv))
    first = ex.run([1, 2, 3])
    again = ex.run([1, 2, 3])
    assert not np.allclose(first, again)  # the second pass starts from the state the first left
    ex.reset()
    assert np.array_equal(ex.run([1, 2, 3]), first)


# --- interchange --------------------------------------------------------------------------------------------
def test_save_load_run_gives_identical_outputs(small_rwkv, tmp_path):
    small_rwkv.set_thetas(0.2)
    graph = build_graph(small_rwkv)
    tokens = [5, 7, 9, 11, 13, 2]
    expected = Executor(graph).run(tokens)
    graph.save(tmp_path / "g")
    loaded = ProcessGraph.load(tmp_path / "g")
    assert loaded.structure() == graph.structure()
    for p in graph:
        for n, v in p.vars.items():
            assert np.array_equal(loaded[p.name].vars[n].value, v.value)
    assert np.array_equal(Executor(loaded).run(tokens), expected)


def test_to_networkx_round_trips_the_structure(small_opt):
    graph = build_graph(small_opt)
    g = graph.to_networkx()
    assert g.number_of_nodes() == len(graph) and g.number_of_edges() == len(graph.connections())
    assert g.nodes["L0.attn.qkv"]["kind"] == "dense"
    assert g.edges["L0.attn.qkv.threshold", "L0.attn.qkv", "out->inp"]["size"] == small_opt.config.d_model
    again = ProcessGraph.from_networkx(g)
    assert again.structure() == graph.structure()
    assert np.array_equal(Executor(again).run([1, 2, 3]), Executor(graph).run([1, 2, 3]))


def test_a_folder_from_another_version_is_refused(small_rwkv, tmp_path):
    build_graph(small_rwkv).save(tmp_path)
    meta = json.loads((tmp_path / "graph.json").read_text())
    meta["version"] = 99
    (tmp_path / "graph.json").write_text(json.dumps(meta))
    with pytest.raises(GraphError, match="version 99.*rebuild"):
        ProcessGraph.load(tmp_path)


def test_a_missing_array_is_named(small_rwkv, tmp_path):
    build_graph(small_rwkv).save(tmp_path)
    arrays = dict(np.load(tmp_path / "arrays.npz"))
    del arrays["L1.att.wkv/time_decay"]
    np.savez(tmp_path / "arrays.npz", **arrays)
    with pytest.raises(GraphError, match="no array 'L1.att.wkv/time_decay'"):
        ProcessGraph.load(tmp_path)


@pytest.mark.parametrize("damage", ["no_json", "bad_json", "truncated_npz"])
def test_damaged_folders_give_one_clear_error(small_rwkv, tmp_path, damage):
    build_graph(small_rwkv).save(tmp_path)
    if damage == "no_json":
        (tmp_path / "graph.json").unlink()
    elif damage == "bad_json":
        (tmp_path / "graph.json").write_text("{not json")
    else:
        data = (tmp_path / "arrays.npz").read_bytes()
        (tmp_path / "arrays.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(GraphError, match="rebuild"):
        ProcessGraph.load(tmp_path)


def test_eventllm_build_writes_a_self_contained_graph_folder(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "eventllm", "build", "--model", "zoo:rwkv4-tiny", "--thresholds",
                        str(SHIPPED_THRESHOLDS), "--tokens", "16", "-o", str(tmp_path / "g")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "synaptic ops per token: dense 12,804,096" in r.stdout
    g = ProcessGraph.load(tmp_path / "g")
    assert (tmp_path / "g" / "tokenizer.json").exists() and g.meta["event_rates"]["tokens"] == 16
    assert g.meta["thresholds"] == str(SHIPPED_THRESHOLDS)
    r = subprocess.run([sys.executable, "-m", "eventllm", "map", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a graph folder" in r.stderr
