"""Whole zoo models on real lava-nc (Loihi2SimCfg), against our executor and our simulator.

lava-nc installs only on Python 3.10; `make setup` builds `.venv-lava` for it. These tests run the bridge
in that environment as a subprocess (`python -m eventllm.process.lava.bridge`), or through the client the
generation backend uses, and are skipped (with the reason) where it could not be built.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eventllm.data import SAMPLE_TEXT
from eventllm.models.registry import load_model
from eventllm.pipeline import place
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.sparsity.thresholds import apply_thresholds
from sim.engine import Simulator

ROOT = Path(__file__).resolve().parent.parent
LAVA_PYTHON = ROOT / ".venv-lava" / "bin" / "python"
HAVE_LAVA = LAVA_PYTHON.exists() and (ROOT / ".venv-lava" / ".installed").exists()
needs_lava = pytest.mark.skipif(not HAVE_LAVA, reason="no .venv-lava: Python 3.10 was not found when `make setup` ran "
                                "(lava-nc needs Python 3.10)")


def lava(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(LAVA_PYTHON), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def zoo_graph(name):
    loaded = load_model(f"zoo:{name}")
    apply_thresholds(loaded.model, ROOT / "eventllm" / "zoo" / name / "thresholds.json")
    return build_graph(loaded.model.eval()), loaded.tokenizer.encode(SAMPLE_TEXT)[:16]


def small_graph(weight_bits: int = 16, event_bits: int = 16):
    """A 2-layer RWKV-4 with random weights in every part and θ = 0.05 at every site (about half of its inputs sent):
    the hierarchical form runs one Lava process per process of ours, so its cost grows with the layers, not the width."""
    from eventllm.models import RWKV, RWKVConfig
    from eventllm.models.quantize import quantize_model

    model = RWKV(RWKVConfig(vocab_size=64, d_model=32, n_layer=2, d_ffn=96)).randomize(seed=1).eval()
    if weight_bits < 16 or event_bits < 16:
        quantize_model(model, weight_bits, "mse", event_bits=event_bits)
    model.set_thetas(0.05)
    return build_graph(model)


def run_bridge(tmp_path, graph, tokens=None, blocks="hierarchical", inputs=None, prefix="", probes=()):
    graph.save(tmp_path / "graph")
    args = ["-m", "eventllm.process.lava.bridge", "run", str(tmp_path / "graph"), "--blocks", blocks, "--output", str(tmp_path / "lava.npz")]
    if tokens is not None:
        args += ["--tokens", ",".join(map(str, tokens))]
    if inputs is not None:
        np.savez(tmp_path / "inputs.npz", **inputs)
        args += ["--inputs", str(tmp_path / "inputs.npz"), "--prefix", prefix]
    for p in probes:
        args += ["--probe", p]
    r = lava(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    got = dict(np.load(tmp_path / "lava.npz"))
    events = dict(zip(got.pop("events:paths").tolist(), got.pop("events:counts").tolist()))
    return got, events


def fused_run_equals_executor_and_simulator(tmp_path, graph, tokens) -> dict[str, int]:
    """Run the whole graph on lava-nc in the fused form; assert its logits within 1e-4 of our executor's and the
    events of every out-port, counted by the Lava processes, equal to the simulator's; return those events."""
    ex = Executor(graph)
    ours = ex.run(tokens)
    hw = place(graph, "seneca")
    sim = Simulator(graph, hw.mapping, hw.costs)
    sim.run(tokens)
    got, events = run_bridge(tmp_path, graph, tokens, blocks="fused")
    assert got[graph.output].shape == ours.shape == (len(tokens), ours.shape[1])
    # Lava's floating_pt models compute in float64, our executor in float32 (as torch does): ~3e-6 apart on the zoo
    # models; a token out of step gives differences of order 0.1 to 10
    np.testing.assert_allclose(got[graph.output], ours, atol=1e-4, rtol=0)
    assert events == sim.port_events() == ex.counts.per_port
    assert len(events) == sum(len(p.out_ports) for p in graph)
    return events


@needs_lava
def test_lava_environment_imports_the_graph_package_without_torch():
    r = lava("-c", "import sys, lava, eventllm.process.graph, eventllm.process.lava.network; print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@needs_lava
@pytest.mark.parametrize("name", ["rwkv4-tiny", "opt-tiny"])
def test_whole_zoo_model_on_lava_equals_executor_and_simulator(tmp_path, name):
    """The whole model on lava-nc in the fast form (each layer one Lava process running the layer's process models):
    logits within 1e-4 over 16 tokens, and the events every out-port sent, counted by the Lava processes, equal to the
    simulator's exactly. (The hierarchical form, a Lava process per process, runs one layer below and the whole model
    over a few tokens.)"""
    graph, tokens = zoo_graph(name)
    events = fused_run_equals_executor_and_simulator(tmp_path, graph, tokens)
    # the thresholds really sparsify what Lava's Dense processes receive
    sites = [p for p in graph if p.kind == "threshold"]
    assert sum(events[f"{p.name}.out"] for p in sites) < 0.8 * 16 * sum(p.out_ports["out"].size for p in sites)


@needs_lava
def test_the_hierarchical_form_of_the_whole_model_equals_the_executor(tmp_path):
    """Every process of the graph a Lava process, a hierarchical process per layer, over a few tokens."""
    graph, tokens = small_graph(), list(range(3, 7))
    ex = Executor(graph)
    ours = ex.run(tokens)
    got, events = run_bridge(tmp_path, graph, tokens, blocks="hierarchical")
    np.testing.assert_allclose(got[graph.output], ours, atol=1e-4, rtol=0)
    assert events == ex.counts.per_port


@needs_lava
def test_one_block_fed_from_outside_with_probes(tmp_path):
    """A part of the graph (--prefix) with its input injected, probes on inner ports."""
    graph, tokens = zoo_graph("rwkv4-tiny")
    probes = ["L0.att.wkv.out", "L0.att.output.out", "L0.ffn.value.threshold.out", "L0.ffn.residual.out"]
    ex = Executor(graph, probes=["ln0.out", *probes])
    ex.run(tokens[:8])
    got, events = run_bridge(tmp_path, graph, inputs={"ln0.out": ex.probed("ln0.out")}, prefix="L0.", probes=probes)
    for path in probes:
        np.testing.assert_allclose(got[path], ex.probed(path), atol=1e-4, rtol=0)
    assert events["L0.ffn.value.threshold.out"] == int((ex.probed("L0.ffn.value.threshold.out") != 0).sum())


@needs_lava
def test_a_process_kind_without_lava_counterpart_is_named(tmp_path):
    code = """
import numpy as np
from eventllm.errors import GraphError
from eventllm.process.core import Process
from eventllm.process.graph import ProcessGraph
from eventllm.process.models import ProcessModel, implements
from eventllm.process.lava.network import LavaNetwork

class Halve(Process):
    kind = "halve_test"
    def __init__(self, name, n):
        super().__init__(name)
        self._in("inp", n)
        self._out("out", n)

@implements(Halve)
class HalveModel(ProcessModel):
    ops_per_entry = 1
    def run(self, inputs):
        return {"out": inputs["inp"] / 2}

try:
    LavaNetwork(ProcessGraph([Halve("h", 4)], output="h.out"))
except GraphError as e:
    print(e)
"""
    r = lava("-c", code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "h: Halve (halve_test) has no Lava counterpart yet" in r.stdout


@needs_lava
def test_generate_on_lava_prints_the_same_greedy_tokens_as_the_simulator(tmp_path):
    outs = {}
    for backend in ("lava", "sim"):
        fast = ["--lava-blocks", "fused"] if backend == "lava" else []
        r = subprocess.run([sys.executable, "-m", "eventllm", "generate", "--model", "zoo:rwkv4-tiny", "--backend", backend,
                            *fast, "--max-tokens", "8", "--greedy", "--json", str(tmp_path / f"{backend}.json")],
                           input="The sea was calm\n", capture_output=True, text=True, cwd=ROOT, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[backend] = r.stdout
    reply = [line for line in outs["lava"].splitlines() if line.startswith("model>")]
    assert reply and reply == [line for line in outs["sim"].splitlines() if line.startswith("model>")]
    import json

    lava_json, sim_json = (json.loads((tmp_path / f"{b}.json").read_text()) for b in ("lava", "sim"))
    assert lava_json["backend"] == "lava" and lava_json["generated_tokens"] == 8
    assert lava_json["sparsity"] == pytest.approx(sim_json["sparsity"], abs=1e-9)  # from Lava's own counters


def test_lava_backend_without_the_lava_environment_is_one_error_line(tmp_path):
    env = {**os.environ, "EVENTLLM_LAVA_PYTHON": str(tmp_path / "no-such-python")}
    r = subprocess.run([sys.executable, "-m", "eventllm", "generate", "--model", "zoo:rwkv4-tiny", "--backend", "lava",
                        "--prompt", "The sea", "--max-tokens", "2"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "make setup" in lines[0] and "Traceback" not in r.stderr


@needs_lava
def test_simulate_on_lava_checks_logits_and_events_against_the_simulator(tmp_path):
    graph, tokens = zoo_graph("rwkv4-tiny")
    graph.save(tmp_path / "graph")
    hw = place(graph, "seneca")
    hw.mapping.save(tmp_path / "mapping.json")
    r = subprocess.run([sys.executable, "-m", "eventllm", "simulate", str(tmp_path / "graph"), "--mapping", str(tmp_path / "mapping.json"),
                        "--backend", "lava", "--lava-blocks", "fused", "--token-ids", ",".join(map(str, tokens)), "--json",
                        str(tmp_path / "s.json"), "-q"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    lava_part = json.loads((tmp_path / "s.json").read_text())["lava"]
    assert lava_part["tokens"] == 16 and lava_part["max_abs_logit_difference"] < 1e-4
    assert lava_part["ports_with_equal_events"] == lava_part["ports"] == sum(len(p.out_ports) for p in graph)


@needs_lava
def test_int8_model_on_lava_fixed_point_dense_agrees_with_the_executor(tmp_path):
    """A model with int8 weights and int8 events on Lava: every projection fed by int8 events is lava's Dense
    run by lava's bit-accurate fixed-point model (integer weights, integer sums of the events' integers), scaled
    back after; the head (float events from its LayerNorm) is a float Dense of the weights' values. Logits and
    inner outputs agree with our executor to float rounding, and every out-port's events are the executor's
    (an integer sum that cancels exactly sends no event in both)."""
    graph = small_graph(8, 8)
    tokens = [5, 17, 3, 42, 9]
    probes = ["L0.att.key.out", "L0.att.output.out", "L0.ffn.key.out", "L1.ffn.value.out", "L1.ffn.residual.out"]
    ex = Executor(graph, probes=probes)
    ours = ex.run(tokens)
    graph.save(tmp_path / "graph")
    r = lava("-c", f"""
import numpy as np
from eventllm.process.graph import ProcessGraph
from eventllm.process.lava import processes as lp
from eventllm.process.lava.bridge import run
g = ProcessGraph.load({str(tmp_path / 'graph')!r})
got, events, net = run(g, tokens={tokens!r}, probes={probes!r})
fixed = sorted(n for n, p in net.leaves.items() if isinstance(p, lp.FixedPointDense))
np.savez({str(tmp_path / 'lava.npz')!r}, fixed=np.array(fixed), paths=np.array(list(events)),
         counts=np.array(list(events.values())), **got)
""")
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "lava.npz")
    int8_fed = [p.name for p in graph if p.kind == "dense" and p.weight_bits == 8 and p.input_event_bits == 8]
    assert sorted(got["fixed"].tolist()) == sorted(int8_fed) and len(int8_fed) == 7 * len(graph.layers())
    np.testing.assert_allclose(got[graph.output], ours, atol=1e-4, rtol=0)
    for path in probes:
        np.testing.assert_allclose(got[path], ex.probed(path), atol=1e-4, rtol=0)
    assert dict(zip(got["paths"].tolist(), got["counts"].tolist())) == ex.counts.per_port


@needs_lava
@pytest.mark.parametrize("kind", ["wina", "gradient"])
def test_per_neuron_thresholds_on_lava_equal_the_executor(kind, tmp_path):
    """Per-neuron thresholds (a θ vector per site; WINA's, or the calibrated gradient scales) on lava-nc, layer 0 of
    zoo:rwkv4-tiny: its outputs within 1e-4 and every port's events equal."""
    from tests.test_thresholds import _per_neuron

    loaded = load_model("zoo:rwkv4-tiny")
    model = loaded.model.eval()
    apply_thresholds(model, ROOT / "eventllm" / "zoo" / "rwkv4-tiny" / "thresholds.json")
    _per_neuron(model, kind)
    graph = build_graph(model)
    assert graph["L0.att.key.threshold"].vars["theta"].value.ndim == 1
    tokens = loaded.tokenizer.encode(SAMPLE_TEXT)[:4]
    probes = ["L0.att.key.threshold.out", "L0.att.output.out", "L0.ffn.value.threshold.out", "L0.ffn.residual.out"]
    ex = Executor(graph, probes=["ln0.out", *probes])
    ex.run(tokens)
    # layer 0 in the hierarchical form (one Lava process per process of ours), fed the executor's input
    got, events = run_bridge(tmp_path, graph, inputs={"ln0.out": ex.probed("ln0.out")}, prefix="L0.", probes=probes)
    for path in probes:
        np.testing.assert_allclose(got[path], ex.probed(path), atol=1e-4, rtol=0)
    assert events and all(n == ex.counts.per_port[path] for path, n in events.items())
