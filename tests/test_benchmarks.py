"""Every script under benchmarks/ runs in its --small mode (the least sizes that still run each of its stages), called
in this process through its `main(argv)`, and writes into tmp_path what it promises: a new benchmark without a small
mode, or without a check below, fails here. No benchmark module may shadow a package (`import mapping` would find it)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def read(path: Path) -> dict:
    assert path.is_file(), f"{path.name} was not written"
    return json.loads(path.read_text())


def check_scale_thresholds(tmp: Path) -> None:
    from eventllm.pipeline import shipped_thresholds
    from eventllm.sparsity.thresholds import read_thresholds

    out, src = read(tmp / "scaled.json"), read_thresholds(shipped_thresholds("zoo:rwkv4-tiny"))
    scale = out["meta"]["theta_scale"]["scale"]
    assert positive(scale) and scale != 1
    assert [{k: v * scale for k, v in layer.items()} for layer in src["thresholds"]] == out["thresholds"]


def check_placement(tmp: Path) -> None:
    out = read(tmp / "placement.json")
    assert len(out["placement"]) == 2
    for graph in out["placement"].values():
        assert positive(graph["cores"]) and all(positive(h) for h in graph["hop_traffic"].values())
        assert positive(graph["bisection_vs_sequential"]) and positive(graph["bisection_vs_random"])
    assert positive(out["large"]["cores_used"]) and positive(out["large"]["chips"]) and positive(out["large"]["seconds"])


def check_energy(tmp: Path) -> None:
    out = read(tmp / "energy.json")
    assert len(out) == 3  # the two zoo models and the random-weight shape
    for model in out.values():
        for mode in ("dense", "natural", "thresholded"):
            assert positive(model[mode]["energy_per_token_j"]) and positive(model[mode]["latency_per_token_s"])
        # the dense run processes every entry: never cheaper than skipping zeros
        assert model["dense"]["energy_per_token_j"] >= model["thresholded"]["energy_per_token_j"]
        assert positive(model["cores"]) and positive(model["tokens"])


def check_simulator(tmp: Path) -> None:
    out = read(tmp / "simulator.json")
    assert len(out["models"]) == 2  # the zoo model and the random-weight shape
    for model in out["models"].values():
        assert all(positive(v) for v in model.values()), model


def check_sparsity_curve(tmp: Path) -> None:
    out = read(tmp / "sparsity_curve.json")
    assert set(out["curves"]) == set(out["per_layer"]) == {"rwkv4-tiny", "opt-tiny"}
    for points in out["curves"].values():
        natural, shipped = (next(p for p in points if p["scale"] == s) for s in (0.0, 1.0))
        assert all(positive(p["ppl"]) and 0 <= p["sparsity"] < 1 for p in points)
        assert shipped["sparsity"] > natural["sparsity"]  # the shipped θ zero more inputs than θ = 0
    assert (tmp / "sparsity_curve.png").stat().st_size and (tmp / "per_layer_sparsity.png").stat().st_size


def check_allocation(tmp: Path) -> None:
    out = read(tmp / "allocation.json")
    assert set(out["runs"]) == {"paper", "greedy"} and out["runs"]["greedy"]["prices"]
    for run in out["runs"].values():
        assert positive(run["seconds"]) and positive(run["evaluations"]) and positive(run["scale"])
        assert run["check"]["ppl_increase"] <= out["args"]["max_ppl_increase"]  # the bound the search promises
        assert positive(run["test"]["ppl"]) and positive(run["test"]["ppl_dense"])
        assert run["test"]["mac_weighted"]["thresholded"] > run["test"]["mac_weighted"]["natural"] >= 0
    assert len(list((tmp / "thresholds").glob("*.json"))) == 2


def check_calibration(tmp: Path) -> None:
    out = read(tmp / "calibration.json")
    for key in ("training_free_before_s", "training_free_s", "training_based_s", "ratio", "target_sparsity"):
        assert positive(out[key]), key
    assert set(out["models"]) == {"dense (θ = 0)", "training-free", "training-based"}
    for m in out["models"].values():
        assert positive(m["ppl"]) and positive(m["lambada_ppl"]) and 0 <= m["lambada_acc"] <= 1 and 0 <= m["sparsity"] < 1
    assert out["models"]["training-free"]["sparsity"] > out["models"]["dense (θ = 0)"]["sparsity"]


def check_weight_average(tmp: Path) -> None:
    out = read(tmp / "weight_average.json")
    assert len(out["runs"]) == len(out["summary"]) == 2  # the last iterate and the average
    for run in out["runs"].values():
        assert positive(run["seconds"]) and run["checks"]
        assert all(math.isfinite(c["ppl_increase"]) and 0 <= c["mac_weighted"] < 1 for c in run["checks"])
    assert all(math.isfinite(v) for s in out["summary"].values() for v in s.values())


def check_finetune_throughput(tmp: Path) -> None:
    out = read(tmp / "finetune_throughput.json")
    assert [r["batch"] for r in out["runs"]] == [1, 2]
    assert all(positive(r["seconds_per_step"]) and positive(r["tokens_per_s"]) for r in out["runs"])


def check_training(tmp: Path) -> None:
    out = read(tmp / "training.json")
    micro = out["shapes"]["micro"]
    assert positive(micro["parameters"]) and positive(micro["chunked_tokens_per_s"]) and positive(micro["first_loss_chunked"])
    if "fused_tokens_per_s" in micro:  # where the fused kernel runs (a GPU, or TRITON_INTERPRET=1)
        assert positive(micro["ratio"]) and micro["first_loss_fused"] == pytest.approx(micro["first_loss_chunked"], rel=1e-2)


def check_delta(tmp: Path) -> None:
    out = read(tmp / "delta.json")
    assert positive(out["dense"]["energy_j"]) and positive(out["dense"]["latency_s"])
    modes = [(p["mode"], p["theta_delta"]) for p in out["points"]]
    assert ("natural", None) in modes and ("thresholded", 0.05) in modes
    for p in out["points"]:
        for key in ("ppl", "energy_j", "latency_s", "energy_ratio", "latency_ratio", "cores", "synops"):
            assert positive(p[key]), (p["mode"], key)
        assert math.isfinite(p["ppl_increase"])


def check_pareto(tmp: Path) -> None:
    out = read(tmp / "pareto.json")
    assert positive(out["ppl_dense"]) and positive(out["dense"]["energy_j"]) and not out.get("partial")
    assert {(p["weight_bits"], p["theta_scale"]) for p in out["points"]} == {(16, 0.0), (16, 1.0), (8, 0.0), (8, 1.0)}
    for p in out["points"]:
        for key in ("ppl", "energy_j", "latency_s", "cores", "energy_ratio", "latency_ratio", "cores_ratio"):
            assert positive(p[key]), (p["weight_bits"], p["theta_scale"], key)
    assert (tmp / "pareto.png").stat().st_size


def check_methods(tmp: Path) -> None:
    out = read(tmp / "methods.json")
    assert positive(out["dense_ppl"]) and 0 <= out["dense_lambada_acc"] <= 1 and len(out["methods"]) == 1
    (entry,) = out["methods"].values()
    assert [p["scale"] for p in entry["points"]] == [0.5, 1.0] and 0 <= entry["lambada_acc"] <= 1
    for p in entry["points"]:
        assert positive(p["ppl"]) and 0 < p["site_mean"] < 1 and 0 < p["mac_weighted"] < 1
    assert entry["points"][1]["mac_weighted"] > entry["points"][0]["mac_weighted"]  # a higher θ zeroes more
    assert (tmp / "methods.png").stat().st_size


def check_lava_speed(tmp: Path) -> None:
    out = read(tmp / "lava_speed.json")
    backends = [r["backend"] for r in out["rows"]]
    assert backends == ["executor (numpy)", "simulator (message engine)", "lava-nc, fused blocks", "lava-nc, hierarchical blocks"]
    for r in out["rows"]:
        assert positive(r["tokens_per_s"]) and positive(r["first_token_s"]) and positive(r["processes"])
        assert r["max_abs_diff"] < 1e-4  # every backend computes the executor's logits


def lava_missing() -> str | None:
    """Why the Lava environment cannot run here (None: it can), as tests/test_lava_bridge.py skips."""
    from eventllm.errors import ConfigError
    from eventllm.process.lava.client import lava_python

    try:
        lava_python()
    except ConfigError as e:
        return str(e)
    return None


def check_wkv7_chunk(tmp: Path) -> None:
    out = read(tmp / "wkv7_chunk.json")
    assert [r["tokens"] for r in out["rows"]] == [16, 64]
    for r in out["rows"]:
        assert all(positive(r[k]) for k in ("scan_forward_s", "chunked_forward_s", "forward_ratio", "backward_ratio"))
        assert r["max_abs_diff"] < 1e-3  # the chunked form is the scan's, within float rounding


def check_real_size(tmp: Path) -> None:
    out = read(tmp / "stages.json")
    assert [s["stage"] for s in out["stages"]] == ["write .pth", "calibrate", "build", "map", "simulate (trace)"]
    assert all(positive(s["seconds"]) and positive(s["peak_rss_bytes"]) for s in out["stages"])
    assert positive(out["energy_per_token_j"]) and positive(out["latency_per_token_s"])
    assert positive(out["stages"][0]["parameters"])  # the write stage's record


# benchmark → (its arguments after --small, {tmp} standing for the test's folder; the check of what it wrote)
CASES = {
    "allocation": (["--json", "{tmp}/allocation.json", "--thresholds-dir", "{tmp}/thresholds"], check_allocation),
    "calibration": (["--json", "{tmp}/calibration.json"], check_calibration),
    "delta": (["-o", "{tmp}"], check_delta),
    "energy": (["--json", "{tmp}/energy.json"], check_energy),
    "finetune_throughput": (["-o", "{tmp}/finetune_throughput"], check_finetune_throughput),
    "lava_speed": (["--json", "{tmp}/lava_speed.json"], check_lava_speed),
    "methods": (["-o", "{tmp}/methods"], check_methods),
    "pareto": (["-o", "{tmp}"], check_pareto),
    "placement": (["--json", "{tmp}/placement.json"], check_placement),
    "real_size": (["-o", "{tmp}"], check_real_size),
    "scale_thresholds": (["-o", "{tmp}/scaled.json"], check_scale_thresholds),
    "sparsity_curve": (["--output", "{tmp}"], check_sparsity_curve),
    "simulator": (["--json", "{tmp}/simulator.json"], check_simulator),
    "training": (["--json", "{tmp}/training.json"], check_training),
    "weight_average": (["-o", "{tmp}/weight_average"], check_weight_average),
    "wkv7_chunk": (["--json", "{tmp}/wkv7_chunk.json"], check_wkv7_chunk),
}


def load(name: str):
    """The benchmark module, imported by its path (its sibling `_common` found through sys.path)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The small runs take milliseconds per operation: a second thread buys nothing there, and beside other jobs on
    the 2-core CPU its spinning made a zoo model's load 8x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_small_and_writes_what_it_promises(name, tmp_path, monkeypatch, capsys):
    assert importlib.util.find_spec(name) is None, f"benchmarks/{name}.py shadows the importable module {name!r}: rename it"
    assert name in CASES, f"benchmarks/{name}.py has no case here: give it a --small mode and add how to check its output"
    if name == "lava_speed" and lava_missing():
        pytest.skip(lava_missing())
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = load(name)
    assert "--small" in module.__doc__, f"benchmarks/{name}.py: its docstring's usage lines should show --small"
    argv, check = CASES[name]
    argv = ["--small", *(a.format(tmp=tmp_path) for a in argv)]
    with pytest.raises(SystemExit) as bad:
        module.main([*argv, "--no-such-option"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and err.count("\n") == 1 and f"{name}.py: error: unrecognized arguments: --no-such-option" in err
    module.main(argv)
    check(tmp_path)
