"""Sparsity statistics equal a hand count."""

import pytest
import torch

from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport, sparsity_json


def test_meter_counts_zeros_of_each_site(small_rwkv):
    site = small_rwkv.site(0, "att.key")
    site.theta = 0.5
    with SparsityMeter(small_rwkv) as meter:
        site(torch.tensor([[0.1, 0.6, -0.4, -0.9]]))  # two of four are zeroed
        site(torch.tensor([[0.0, 0.0, 2.0, 3.0]]))  # two more of four
    assert meter.zeros[(0, "att.key")] == 4 and meter.elements[(0, "att.key")] == 8
    assert meter.zero_fraction()[(0, "att.key")] == 0.5
    assert site.observer is None  # detached on exit


def test_mac_weighting_by_hand():
    shapes = {"a": (10, 10), "b": (10, 30)}  # 100 and 300 MACs per token
    report = SparsityReport(("a", "b"), shapes, n_layer=1, fractions={(0, "a"): 0.5, (0, "b"): 0.1})
    assert report.average() == pytest.approx(0.3)
    assert report.mac_skipped() == pytest.approx((0.5 * 100 + 0.1 * 300) / 400)


def test_json_block_has_natural_thresholded_and_per_layer():
    shapes = {"a": (4, 4)}
    nat = SparsityReport(("a",), shapes, 2, {(0, "a"): 0.1, (1, "a"): 0.3})
    thr = SparsityReport(("a",), shapes, 2, {(0, "a"): 0.4, (1, "a"): 0.6})
    js = sparsity_json(nat, thr)
    assert js["natural"] == pytest.approx(0.2) and js["thresholded"] == pytest.approx(0.5)
    assert js["ratio"] == pytest.approx(2.5)
    assert js["per_layer"][1]["a"] == {"natural": 0.3, "thresholded": 0.6}


def test_squared_relu_input_is_naturally_sparse_in_rwkv(small_rwkv, tokens):
    with SparsityMeter(small_rwkv) as meter, torch.no_grad():
        small_rwkv(tokens)
    frac = meter.zero_fraction()
    assert all(frac[(i, "ffn.value")] > 0.2 for i in range(3))  # relu² output
    assert all(frac[(i, "att.key")] == 0.0 for i in range(3))  # dense mixing of LayerNorm outputs


def test_json_headline_is_mac_weighted_with_the_site_mean_beside_it():
    # RWKV's FFN key and value sites feed 4x-wide projections: they weigh 4x in the paper's measure
    shapes = {"att.key": (8, 8), "ffn.key": (8, 32)}
    nat = SparsityReport(("att.key", "ffn.key"), shapes, 1, {(0, "att.key"): 0.0, (0, "ffn.key"): 0.5})
    thr = SparsityReport(("att.key", "ffn.key"), shapes, 1, {(0, "att.key"): 0.5, (0, "ffn.key"): 0.75})
    js = sparsity_json(nat, thr)
    assert js["mac_weighted"]["natural"] == pytest.approx((0 * 64 + 0.5 * 256) / 320)
    assert js["mac_weighted"]["thresholded"] == pytest.approx((0.5 * 64 + 0.75 * 256) / 320)
    assert js["mac_weighted"]["ratio"] == pytest.approx(0.7 / 0.4)
    assert js["site_mean"] == {"natural": 0.25, "thresholded": 0.625, "ratio": 2.5}
