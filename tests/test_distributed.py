"""Segments and torchrun: 2 CPU processes (gloo) give the figures of one process with the same --segments."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventllm.distributed import World, merge_evaluations, segment_bounds
from eventllm.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "gutenberg" / "moby_dick.txt"
THRESHOLDS = ROOT / "eventllm" / "zoo" / "rwkv4-tiny" / "thresholds.json"


def test_segments_are_contiguous_and_ranks_take_contiguous_blocks():
    assert segment_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert [list(World(r, 2).mine(5)) for r in range(2)] == [[0, 1], [2, 3, 4]]
    with pytest.raises(DataError):
        segment_bounds(5, 3)


def test_merged_perplexity_is_over_all_scored_tokens():
    import math

    parts = [{"ppl": math.e, "ppl_dense": math.e, "tokens": 1, "sparsity": {"natural": 0.1, "thresholded": 0.3}, "_run": 2},
             {"ppl": math.e ** 4, "ppl_dense": math.e ** 2, "tokens": 3, "sparsity": {"natural": 0.3, "thresholded": 0.5}, "_run": 4}]
    out = merge_evaluations(parts)
    assert out["ppl"] == pytest.approx(math.e ** 3.25) and out["ppl_dense"] == pytest.approx(math.e ** 1.75)
    assert out["tokens"] == 4 and out["segments"] == 2
    assert out["sparsity"]["thresholded"] == pytest.approx((0.3 * 2 + 0.5 * 4) / 6)
    assert out["sparsity"]["ratio"] == pytest.approx(out["sparsity"]["thresholded"] / out["sparsity"]["natural"])


def run(args, tmp_path, name, procs=1):
    out = tmp_path / f"{name}.json"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable]
    cmd = launcher + ["-m", "eventllm", *args, "--json", str(out), "-q"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA}")
    import shutil

    from eventllm import pipeline
    from mapping import map_graph

    folder = tmp_path_factory.mktemp("graph")
    loaded = pipeline.load("zoo:rwkv4-tiny", thresholds=THRESHOLDS)
    graph = pipeline.build(loaded.model, loaded.name)
    graph.save(folder / "g")
    shutil.copyfile(loaded.tokenizer.path, folder / "g" / "tokenizer.json")
    map_graph(graph, "seneca").save(folder / "m.json")
    return folder


def test_torchrun_evaluate_equals_one_process_with_the_same_segments(tmp_path):
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA}")
    args = ["evaluate", "--model", "zoo:rwkv4-tiny", "--thresholds", str(THRESHOLDS), "--data", str(DATA), "--split", "test",
            "--max-tokens", "512", "--segments", "2"]
    one, _ = run(args, tmp_path, "one")
    two, stdout = run(args, tmp_path, "two", procs=2)
    assert two["segments"] == one["segments"] == 2 and two["tokens"] == one["tokens"] == 510
    for key in ("ppl", "ppl_dense", "bits_per_byte"):
        assert two[key] == pytest.approx(one[key], rel=1e-6)
    assert two["sparsity"]["thresholded"] == pytest.approx(one["sparsity"]["thresholded"], rel=1e-9)
    assert stdout.count("perplexity") == 1  # rank 0 alone prints


def test_torchrun_simulate_data_equals_one_process_and_the_message_engine(tmp_path, mapped):
    args = ["simulate", str(mapped / "g"), "--mapping", str(mapped / "m.json"), "--data", str(DATA), "--split", "test",
            "--max-tokens", "64", "--segments", "2"]
    one, _ = run(args, tmp_path, "one")
    two, _ = run(args, tmp_path, "two", procs=2)
    assert one["engine"] == "trace" and one["tokens"] == two["tokens"] == 64
    assert two["counts_per_token"] == one["counts_per_token"]
    assert two["energy_per_token_j"] == pytest.approx(one["energy_per_token_j"], rel=1e-12)
    assert two["latency_per_token_s"] == pytest.approx(one["latency_per_token_s"], rel=1e-12)
    # the reference: the message engine over the same segments (torch masks differ only at rounding near θ)
    msg, _ = run(args + ["--engine", "message"], tmp_path, "message")
    for c, v in msg["counts_per_token"].items():
        assert one["counts_per_token"][c] == pytest.approx(v, rel=1e-4)
    assert one["energy_per_token_j"] == pytest.approx(msg["energy_per_token_j"], rel=1e-4)


def test_a_torchrun_rank_ends_with_its_code_flushed_and_without_the_teardown():
    code = ("import atexit; atexit.register(lambda: print('teardown ran')); from eventllm.distributed import end_rank; "
            "print('result', end=''); end_rank(3); print(' and on')")
    for world, rc, out in (("2", 3, "result"), ("1", 0, "result and on\nteardown ran\n")):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "WORLD_SIZE": world})
        assert (p.returncode, p.stdout) == (rc, out), p.stderr
