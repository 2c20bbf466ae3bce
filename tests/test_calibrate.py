"""The training-free threshold search on a small model."""

import math

import pytest
import torch

from eventllm.errors import ConfigError, DataError
from eventllm.evaluate.perplexity import perplexity
from eventllm.sparsity.calibrate import batch_loss, calibrate, calibration_batch, keep_grid
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.models.threshold import top_k_per_token

SMALL = dict(tokens=256, context=32, check_tokens=512, progress=False)


def test_top_k_keeps_the_largest_magnitudes_per_token():
    x = torch.tensor([[0.1, -3.0, 0.5, 2.0], [1.0, 1.5, -0.2, 0.0]])
    assert top_k_per_token(x, 0.5).tolist() == [[0.0, -3.0, 0.0, 2.0], [1.0, 1.5, 0.0, 0.0]]
    assert torch.equal(top_k_per_token(x, 1.0), x)


def test_keep_grid_as_published():
    assert keep_grid(1.0, "linear") == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    exp = keep_grid(1.0, "exp", 8)
    assert exp[0] == 1.0 and exp[-1] == 0.01 and exp == sorted(exp, reverse=True)


def test_sparsity_is_monotonic_in_theta(small_rwkv, stream):
    batch = calibration_batch(stream, 256, 32, seed=0)
    seen = []
    for theta in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8):
        small_rwkv.set_thetas(theta)
        with SparsityMeter(small_rwkv) as meter:
            batch_loss(small_rwkv, batch)
        seen.append(SparsityReport.from_meter(small_rwkv, meter).average())
    assert seen == sorted(seen) and seen[-1] > seen[0]


def test_perplexity_bound_is_respected_on_the_calibration_data(small_rwkv, stream):
    res = calibrate(small_rwkv, stream, max_ppl_increase=0.02, seed=3, **SMALL)
    assert res.ppl_increase <= 0.02
    # recompute independently on the same check stream with the thresholds the model now holds
    import numpy as np

    start = int(np.random.default_rng(4).integers(0, len(stream) - 512 + 1))
    check = stream[start : start + 512]
    sparse = perplexity(small_rwkv, check).nll
    small_rwkv.set_thetas(0.0)
    dense = perplexity(small_rwkv, check).nll
    assert math.exp(sparse - dense) - 1 == pytest.approx(res.ppl_increase, abs=1e-6)
    assert res.sparsity > res.natural_sparsity


def test_target_sparsity_is_met(small_rwkv, stream):
    res = calibrate(small_rwkv, stream, target_sparsity=0.6, seed=0, **SMALL)
    assert 0.6 <= res.sparsity < 0.65


def test_same_seed_same_thresholds(small_rwkv, stream):
    a = calibrate(small_rwkv, stream, loss_inc=1.01, seed=1, **SMALL).thetas
    b = calibrate(small_rwkv, stream, loss_inc=1.01, seed=1, **SMALL).thetas
    c = calibrate(small_rwkv, stream, loss_inc=1.01, seed=2, **SMALL).thetas
    assert a == b and a != c


def test_calibrates_opt(small_opt, stream):
    res = calibrate(small_opt, stream, max_ppl_increase=0.05, seed=0, **SMALL)
    assert set(res.thetas) == {(i, p) for i in range(2) for p in small_opt.PROJECTIONS}
    assert res.ppl_increase <= 0.05


def test_bad_requests_are_clear(small_rwkv, stream):
    with pytest.raises(ConfigError, match="only one of"):
        calibrate(small_rwkv, stream, max_ppl_increase=0.01, target_sparsity=0.5, **SMALL)
    with pytest.raises(ConfigError, match="fraction such as 0.01"):
        calibrate(small_rwkv, stream, max_ppl_increase=5 * 100, **SMALL)
    with pytest.raises(DataError, match="calibration needs more than"):
        calibrate(small_rwkv, stream[:20], **SMALL)


def test_reusing_the_cached_prefix_gives_the_same_search(small_rwkv):
    from eventllm.sparsity.calibrate import calibrate

    ids = torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(5)).tolist()
    runs = []
    for reuse in (False, True):
        small_rwkv.set_thetas(0.0)
        r = calibrate(small_rwkv, ids, loss_inc=1.002, tokens=512, context=64, check_tokens=1024, progress=False, reuse_prefix=reuse)
        runs.append(r)
    assert runs[0].keeps == runs[1].keeps and runs[0].thetas == runs[1].thetas
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]


def test_logits_from_a_cached_residual_equal_the_full_forward(small_rwkv, tokens):
    full, _ = small_rwkv(tokens)
    for layer in (0, 1, 3):
        part = small_rwkv.logits_from(layer, small_rwkv.residual_before(tokens, layer))
        assert torch.equal(part, full)


@pytest.mark.parametrize("power, coeff, bound", [(3.0, 0.002, 0.01), (4.0, 0.02, 0.009), (1.5, 0.004, 0.009), (6.0, 1e-5, 0.009)])
def test_final_scale_search_finds_the_largest_scale_within_the_bound_in_few_runs(power, coeff, bound):
    from eventllm.sparsity.calibrate import largest_scale_within

    runs = []

    def increase(s):
        runs.append(s)
        return coeff * s ** power

    s = largest_scale_within(increase, bound, tol=0.05)
    exact = (bound / coeff) ** (1 / power)
    assert increase(s) <= bound  # never a scale over the bound
    assert s >= exact * 0.95 ** (1 / power) - 1e-12  # within 5% of the bound in perplexity terms
    assert len(runs) - 1 <= 6  # (the last call is this test's own check)


def test_final_scale_search_widens_when_the_increase_is_not_measurable():
    from eventllm.sparsity.calibrate import largest_scale_within

    # thresholds that help at first (negative increase), then cost: the search must still find the crossing
    s = largest_scale_within(lambda s: -0.001 if s < 2 else 0.001 * (s - 1.5) ** 3, 0.009, max_runs=8)
    assert 0.001 * (s - 1.5) ** 3 <= 0.009 and s > 3.3


def test_cli_gradient_scores_write_per_neuron_thresholds_that_build_and_evaluate(tmp_path, capsys):
    """`calibrate --scores gradient`: the file carries "scores": "gradient" and each site's measured scales (mean 1,
    not all equal); `evaluate` applies them (sparser than natural) and `build` puts a θ vector in every Threshold."""
    import json

    from eventllm.cli import main
    from eventllm.models import RWKV, RWKVConfig
    from eventllm.models.checkpoints import save_eventllm
    from eventllm.process.graph import ProcessGraph

    text = tmp_path / "text.txt"
    text.write_text("A short calibration text about ships, whales and the sea; the captain looked at the sky. " * 300)
    model = save_eventllm(RWKV(RWKVConfig(vocab_size=256, d_model=32, n_layer=2, d_ffn=64)).randomize(seed=5),
                          tmp_path / "model.safetensors")
    thr, out = tmp_path / "thr.json", tmp_path / "ev.json"
    assert main(["calibrate", "--model", str(model), "--data", str(text), "--split", "all", "--max-ppl-increase", "0.01",
                 "--scores", "gradient", "--grad-tokens", "1024", "--tokens", "256", "--context", "64",
                 "--check-tokens", "1024", "-o", str(thr), "-q"]) == 0
    doc = json.loads(thr.read_text())
    assert doc["scores"] == "gradient" and doc["meta"]["scores"] == "gradient" and doc["meta"]["grad_tokens"] == 1024
    sizes = {"att.key": 32, "att.value": 32, "att.receptance": 32, "att.output": 32, "ffn.key": 32, "ffn.receptance": 32,
             "ffn.value": 64}
    for layer in doc["channel_scales"]:
        assert {p: len(g) for p, g in layer.items()} == sizes
        for g in layer.values():
            assert sum(g) / len(g) == pytest.approx(1.0, rel=1e-4) and max(g) > min(g)
    assert main(["evaluate", "--model", str(model), "--thresholds", str(thr), "--data", str(text), "--split", "all",
                 "--max-tokens", "1024", "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())
    assert r["sparsity"]["mac_weighted"]["thresholded"] > r["sparsity"]["mac_weighted"]["natural"]
    assert main(["build", "--model", str(model), "--thresholds", str(thr), "--tokens", "4", "-o", str(tmp_path / "g")]) == 0
    graph = ProcessGraph.load(tmp_path / "g")
    assert all(q.vars["theta"].value.shape == (q.attrs["n"],) for q in graph if q.kind == "threshold")
