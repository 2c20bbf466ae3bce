"""A thresholded RWKV-4 block of zoo:rwkv4-tiny on real lava-nc (Loihi2SimCfg), against our executor.

lava-nc installs only on Python 3.10; `make setup` builds `.venv-lava` for it. These tests run the bridge
in that environment as a subprocess and are skipped (with the reason) where it could not be built.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from eventllm.data import SAMPLE_TEXT
from eventllm.models.registry import load_model
from eventllm.process.build import build_graph
from eventllm.process.executor import Executor
from eventllm.sparsity.thresholds import apply_thresholds

ROOT = Path(__file__).resolve().parent.parent
LAVA_PYTHON = ROOT / ".venv-lava" / "bin" / "python"
THRESHOLDS = ROOT / "eventllm" / "zoo" / "rwkv4-tiny" / "thresholds.json"

pytestmark = pytest.mark.skipif(
    not (LAVA_PYTHON.exists() and (ROOT / ".venv-lava" / ".installed").exists()),
    reason="no .venv-lava: Python 3.10 was not found when `make setup` ran (lava-nc needs Python 3.10)",
)


def lava(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(LAVA_PYTHON), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_lava_environment_imports_the_graph_package_without_torch():
    r = lava("-c", "import sys, lava, eventllm.process.graph, eventllm.process.executor; print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_thresholded_rwkv_block_on_lava_matches_the_executor(tmp_path):
    loaded = load_model("zoo:rwkv4-tiny")
    apply_thresholds(loaded.model, THRESHOLDS)
    graph = build_graph(loaded.model.eval())
    tokens = loaded.tokenizer.encode(SAMPLE_TEXT)[:8]
    probes = ["L0.att.wkv.out", "L0.att.output.out", "L0.ffn.value.threshold.out", "L0.ffn.residual.out"]
    ex = Executor(graph, probes=["ln0.out", *probes])
    ex.run(tokens)
    graph.save(tmp_path / "graph")
    np.savez(tmp_path / "inputs.npz", **{"ln0.out": ex.probed("ln0.out")})
    r = lava("-m", "eventllm.process.lava.bridge", str(tmp_path / "graph"), "--prefix", "L0.", "--inputs",
             str(tmp_path / "inputs.npz"), *[a for p in probes for a in ("--probe", p)], "--output", str(tmp_path / "lava.npz"))
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "lava.npz")
    for path in probes:
        ours = ex.probed(path)
        assert got[path].shape == ours.shape == (8, ours.shape[1])
        # Lava's floating_pt models compute in float64, our executor in float32 (as torch does): the two
        # differ by float32 rounding, ~1e-6 here; 1e-4 leaves room without hiding a wrong timing or formula
        # (a token out of step gives differences of order 0.1 to 1)
        np.testing.assert_allclose(got[path], ours, atol=1e-4, rtol=0)
    # the thresholds really sparsify what Lava's Dense receives
    assert (got["L0.ffn.value.threshold.out"] == 0).mean() > 0.5


def test_bridge_names_a_process_kind_it_cannot_run(tmp_path, small_opt):
    graph = build_graph(small_opt)
    graph.save(tmp_path / "graph")
    np.savez(tmp_path / "inputs.npz", **{"emb.out": np.zeros((2, 32))})
    r = lava("-m", "eventllm.process.lava.bridge", str(tmp_path / "graph"), "--prefix", "L0.", "--inputs",
             str(tmp_path / "inputs.npz"), "--probe", "L0.ffn.residual.out", "--output", str(tmp_path / "o.npz"))
    assert r.returncode == 2
    assert "not bridged to Lava" in r.stderr
