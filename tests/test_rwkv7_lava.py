"""RWKV-7 on real lava-nc (Loihi2SimCfg): the random model of tests/test_rwkv7_graph.py against our executor and
simulator, every RWKV-7 kind as its own Lava process, and `generate --backend lava` on a BlinkDL x070 .pth.

Helpers and the skip rule (no `.venv-lava`) are tests/test_lava_bridge.py's."""

import json

import numpy as np
import pytest

from eventllm.process.executor import Executor
from tests.test_lava_bridge import fused_run_equals_executor_and_simulator, needs_lava, run_bridge
from tests.test_rwkv7_graph import CFG, graph, ids, model  # noqa: F401 (the shared fixtures)

RWKV7_KINDS = {"wkv7", "head_l2norm", "group_norm", "rwkv7_bonus", "tanh", "rwkv7_decay", "rwkv7_key", "lerp"}


@needs_lava
def test_whole_rwkv7_on_lava_equals_executor_and_simulator(tmp_path, graph, ids):  # noqa: F811
    """The fast form (each layer one Lava process running its process models): logits within 1e-4 of the executor
    over 12 tokens (float64 against float32: 4e-7 apart here), and every out-port's events, counted by the Lava
    processes, equal to the simulator's; the thresholds really sparsify."""
    tokens = ids[:12]
    events = fused_run_equals_executor_and_simulator(tmp_path, graph, tokens)
    sites = [p for p in graph if p.kind == "threshold"]
    assert sum(events[f"{p.name}.out"] for p in sites) < 0.9 * 12 * sum(p.out_ports["out"].size for p in sites)


@needs_lava
def test_every_rwkv7_kind_as_its_own_lava_process_equals_the_executor(tmp_path, graph, ids):  # noqa: F811
    """Layer 1 in the hierarchical form (one Lava process per process: the WKV-7 state, the bonus, the lerp of the
    value residual, the group and L2 norms, tanh, decay, the scaled key, the six-way token shift), fed layer 0's
    residual stream and first value from outside: inner outputs within 1e-4 and every out-port's events equal."""
    tokens = ids[:3]
    feeds = ["L0.ffn.residual.out", "L0.att.value.out"]
    probes = ["L1.att.wkv.out", "L1.att.ln_x.out", "L1.att.bonus.out", "L1.att.v_residual.out", "L1.ffn.residual.out"]
    ex = Executor(graph, probes=feeds + probes)
    ex.run(tokens)
    assert {p.kind for p in graph if p.name.startswith("L1.")} >= RWKV7_KINDS
    got, events = run_bridge(tmp_path, graph, inputs={f: ex.probed(f) for f in feeds}, prefix="L1.", probes=probes,
                             blocks="hierarchical")
    for path in probes:
        np.testing.assert_allclose(got[path], ex.probed(path), atol=1e-4, rtol=0)
    layer1 = {k: v for k, v in ex.counts.per_port.items() if k.startswith("L1.")}
    assert events == layer1


@needs_lava
def test_generate_rwkv7_pth_on_lava_gives_the_simulators_tokens(tmp_path):
    from eventllm.cli import main
    from eventllm.models.checkpoints import save_blinkdl
    from eventllm.models.rwkv7 import RWKV7, RWKV7Config

    cfg = RWKV7Config(vocab_size=256, d_model=64, n_layer=2, head_size=32, d_ffn=128, d_decay=16, d_iclr=16, d_value=8, d_gate=16)
    pth = str(save_blinkdl(RWKV7(cfg).randomize(seed=3), tmp_path / "r7.pth"))
    outs = {}
    for backend in ("lava", "sim"):
        fast = ["--lava-blocks", "fused"] if backend == "lava" else []
        out = tmp_path / f"{backend}.json"
        assert main(["generate", "--model", pth, "--backend", backend, *fast, "--prompt", "The whale", "--max-tokens", "6",
                     "--greedy", "--json", str(out), "-q"]) == 0
        outs[backend] = json.loads(out.read_text())
    assert outs["lava"]["backend"] == "lava" and outs["lava"]["generated_tokens"] == 6
    assert outs["lava"]["turns_text"] == outs["sim"]["turns_text"]
    assert outs["lava"]["sparsity"] == pytest.approx(outs["sim"]["sparsity"], abs=1e-9)  # from Lava's counters

