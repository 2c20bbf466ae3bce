"""RWKV-7's threshold sites go through the same machinery as RWKV-4's: MACs per site by hand, the paper's search,
greedy allocation, fine-tuning and thresholds files (layer 0 has no value-residual LoRA, hence no site there)."""

import json

import pytest
import torch

from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.models.rwkv7 import RWKV7, RWKV7Config
from eventllm.sparsity.allocate import site_macs
from eventllm.sparsity.calibrate import calibrate
from eventllm.sparsity.finetune import finetune
from eventllm.sparsity.thresholds import ThresholdError, apply_thresholds, thresholds_to_json

SMALL = dict(tokens=256, context=32, check_tokens=512, progress=False)


@pytest.fixture
def small_rwkv7() -> RWKV7:
    """A 3-layer RWKV-7 over the 64-token vocabulary of the shared `stream` fixture: 2 heads of 16, odd LoRA ranks."""
    cfg = RWKV7Config(vocab_size=64, d_model=32, n_layer=3, head_size=16, d_ffn=96, d_decay=8, d_iclr=6, d_value=4, d_gate=12)
    return RWKV7(cfg).randomize(seed=1).eval()


def test_site_macs_by_hand(small_rwkv7):
    macs = site_macs(small_rwkv7)
    C, F, D = 32, 96, {"w": 8, "a": 6, "v": 4, "g": 12}
    for i in range(3):
        for p in ("att.receptance", "att.key", "att.value", "att.output"):
            assert macs[(i, p)] == C * C
        for lora, d in D.items():
            if lora == "v" and i == 0:  # the value residual starts at layer 1
                assert (0, "att.v1") not in macs and (0, "att.v2") not in macs
                continue
            assert macs[(i, f"att.{lora}1")] == C * d and macs[(i, f"att.{lora}2")] == d * C
        assert macs[(i, "ffn.key")] == C * F and macs[(i, "ffn.value")] == F * C
    per_layer = 4 * C * C + 2 * C * sum(D.values()) + 2 * C * F
    assert sum(macs.values()) == 3 * per_layer - 2 * C * D["v"]
    assert len(small_rwkv7.threshold_sites()) == 3 * 14 - 2


def test_meter_sees_every_site_once_per_token(small_rwkv7, tokens):
    with SparsityMeter(small_rwkv7) as meter:
        with torch.no_grad():
            small_rwkv7(tokens)
    assert set(meter.elements) == set(site_macs(small_rwkv7))
    shapes = small_rwkv7.site_shapes()
    assert all(n == tokens.numel() * shapes[p][0] for (i, p), n in meter.elements.items())
    # naturally sparse: the squared ReLU output (FFN value input); the rest is dense
    frac = meter.zero_fraction()
    assert frac[(1, "ffn.value")] > 0.3 and frac[(1, "att.key")] == 0.0


def test_paper_search_holds_the_bound_and_raises_sparsity(small_rwkv7, stream):
    res = calibrate(small_rwkv7, stream, max_ppl_increase=0.02, seed=3, **SMALL)
    assert res.ppl_increase <= 0.02
    assert set(res.thetas) == set(site_macs(small_rwkv7))
    assert res.mac_weighted > res.natural_mac_weighted and res.sparsity > res.natural_sparsity
    assert any(t > 0 for (i, p), t in res.thetas.items() if p.startswith("att.") and p[-1] in "12")


def test_greedy_allocation_holds_the_bound(small_rwkv7, stream):
    res = calibrate(small_rwkv7, stream, max_ppl_increase=0.02, search="greedy", levels=4, **SMALL)
    assert res.ppl_increase <= 0.9 * 0.02 + 1e-9 and res.mac_weighted > res.natural_mac_weighted
    assert small_rwkv7.get_thetas() == pytest.approx(res.thetas)


def test_finetune_climbs_to_the_target(small_rwkv7, stream):
    r = finetune(small_rwkv7, stream, stream, target_sparsity=0.5, steps=30, batch_size=4, context=32, check_every=10,
                 check_tokens=256, progress=False)
    assert r.mac_weighted > r.natural_mac_weighted and all(t > 0 for t in r.thetas.values())


def test_thresholds_file_round_trip_leaves_out_absent_sites(small_rwkv7, tmp_path):
    small_rwkv7.set_thetas({k: 0.01 * (n + 1) for n, k in enumerate(small_rwkv7.get_thetas())})
    doc = thresholds_to_json(small_rwkv7, "small")
    assert "att.v1" not in doc["thresholds"][0] and "att.v1" in doc["thresholds"][1]
    path = tmp_path / "thr.json"
    path.write_text(json.dumps(doc))
    before = small_rwkv7.get_thetas()
    small_rwkv7.set_thetas(0.0)
    assert apply_thresholds(small_rwkv7, path)["missing"] == []
    assert small_rwkv7.get_thetas() == before
    doc["thresholds"][0]["att.v1"] = 0.5
    path.write_text(json.dumps(doc))
    with pytest.raises(ThresholdError, match="layer 0 has no att.v1 site in rwkv7"):
        apply_thresholds(small_rwkv7, path)


def test_sparsity_report_per_layer_marks_absent_sites(small_rwkv7, tokens):
    with SparsityMeter(small_rwkv7) as meter:
        with torch.no_grad():
            small_rwkv7(tokens)
    report = SparsityReport.from_meter(small_rwkv7, meter)
    assert report.per_layer()[0]["att.v1"] is None and report.per_layer()[1]["att.v1"] is not None
    assert report.per_projection()["att.v1"] == pytest.approx((report.fractions[(1, "att.v1")] + report.fractions[(2, "att.v1")]) / 2)
