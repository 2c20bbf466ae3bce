"""The greedy allocation of sparsity across sites by measured loss (`calibrate --search greedy`)."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from eventllm.cli import main
from eventllm.errors import ConfigError
from eventllm.sparsity.allocate import Profile, allocate, hull_steps, levels_after, site_levels
from eventllm.sparsity.calibrate import SEARCHES, calibrate, calibration_batch

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """zoo:rwkv4-tiny and a small calibration batch of the gutenberg valid split (2 windows of 64 tokens)."""
    if not (DATA / "gutenberg").exists():
        pytest.skip(f"shared data not found at {DATA}")
    from eventllm.data import cached_token_stream
    from eventllm.pipeline import load

    loaded = load("zoo:rwkv4-tiny")
    ids = cached_token_stream(str(DATA / "gutenberg"), "valid", loaded.tokenizer).astype("int64").tolist()
    return loaded.model.eval(), calibration_batch(ids, 128, 64, seed=0)


@pytest.fixture(scope="module")
def tiny_allocation(tiny):
    model, batch = tiny
    return allocate(model, batch, math.log1p(0.01), levels=3)


def _profile(name: str, macs: int, costs: list[float]) -> Profile:
    n = len(costs)
    return Profile((0, name), macs, 0.0, [(j + 1) / (n + 1) for j in range(n)], [0.1 * (j + 1) for j in range(n)], list(costs))


def test_a_costly_site_gets_less_sparsity_than_a_cheap_one():
    cheap, costly, wide = _profile("cheap", 100, [0.001, 0.002, 0.004]), _profile("costly", 100, [0.01, 0.02, 0.04]), \
        _profile("wide", 400, [0.01, 0.02, 0.04])
    steps = hull_steps([cheap, costly, wide])
    ratios = [s.ratio for s in steps]
    assert ratios == sorted(ratios, reverse=True)
    # spend about 0.01 nats (summed costs): the cheap site goes all the way, the wide one (4x the MACs for the same
    # loss) is raised before the costly one, which stays dense
    n = max(k for k in range(len(steps) + 1) if sum(s.cost for s in steps[:k]) <= 0.015)
    at = levels_after(steps, n)
    assert at[0] == 2 and at.get(2, -1) >= 0 and 1 not in at


def test_free_and_non_monotone_costs_are_safe():
    # a level that measured cheaper than the one before costs as much as the worst below it (running maximum), and
    # a negative cost is free: never a negative price, never a step back
    p = _profile("x", 100, [-0.002, 0.003, 0.001, 0.005])
    steps = hull_steps([p])
    assert all(s.cost >= 0 and s.gain > 0 for s in steps)
    assert [s.level for s in steps] == sorted(s.level for s in steps) and steps[-1].level == 3
    assert steps[0].cost == 0 and steps[0].level == 0


def test_levels_are_the_zero_fractions_their_theta_gives(tiny):
    model, batch = tiny
    profiles = site_levels(model, batch[:, :-1], 4)
    p = next(p for p in profiles if p.site == (2, "ffn.value"))
    assert p.natural > 0.5  # after the squared ReLU
    assert all(p.natural < q for q in p.levels) and p.levels == sorted(p.levels)
    fractions = []
    site = model.site(*p.site)

    def observe(s, x, y):
        fractions.append((y == 0).float().mean().item())

    for theta in p.thetas:
        model.set_thetas(0.0)
        site.theta, site.observer = theta, observe
        try:
            with torch.no_grad():  # as site_levels runs: the same WKV path (the C kernel), so the very same inputs
                model(batch[:, :-1])
        finally:
            site.observer = None
    model.set_thetas(0.0)
    assert fractions == pytest.approx(p.levels, abs=1e-6)


def test_greedy_keeps_the_calibration_loss_within_the_bound(tiny, tiny_allocation):
    model, batch = tiny
    a = tiny_allocation
    budget = math.log1p(0.01)
    assert a.steps_taken > 0 and a.cost <= budget and a.loss - a.loss_dense <= budget
    # recomputed independently: full forward passes, dense and with the allocation's θ
    model.set_thetas(0.0)
    dense = F.log_softmax(model(batch[:, :-1])[0].float(), -1).flatten(0, 1)
    model.set_thetas(a.thetas)
    sparse = F.log_softmax(model(batch[:, :-1])[0].float(), -1).flatten(0, 1)
    model.set_thetas(0.0)
    targets = batch[:, 1:].reshape(-1, 1)
    increase = (dense.gather(1, targets) - sparse.gather(1, targets)).mean().item()
    kl = (dense.exp() * (dense - sparse)).sum(-1).mean().item()
    assert increase == pytest.approx(a.loss - a.loss_dense, abs=1e-5) and increase <= budget
    assert kl == pytest.approx(a.cost, abs=1e-5)
    assert a.mac_weighted() > sum(p.macs * p.natural for p in a.profiles) / sum(p.macs for p in a.profiles)


def test_greedy_raises_the_cheapest_sites_first(tiny_allocation):
    # on measured prices: the site whose first level buys the most MACs per nat is raised at least as far as the one
    # whose first level buys the fewest
    a = tiny_allocation
    priced = [p for p in a.profiles if p.costs]
    first = {p.site: p.gains()[0] / max(p.costs[0], 1e-12) for p in priced}
    best, worst = max(first, key=first.get), min(first, key=first.get)
    raised = {p.site: a.levels[p.site] - p.natural for p in priced}
    assert raised[best] > 0 and raised[best] >= raised[worst]
    assert max(p.costs[0] for p in priced if p.site == worst) > a.budget or raised[worst] < raised[best]


def test_bad_allocation_requests_are_clear(small_rwkv, tokens):
    with pytest.raises(ConfigError, match="levels must be an integer ≥ 2"):
        allocate(small_rwkv, tokens, 0.01, levels=1)
    with pytest.raises(ConfigError, match="budget must be a finite number"):
        allocate(small_rwkv, tokens, 0.0)
    with pytest.raises(ConfigError, match="unknown cost 'mse'"):
        allocate(small_rwkv, tokens, 0.01, cost="mse")
    with pytest.raises(ConfigError, match="unknown search 'best'; use one of paper, greedy"):
        calibrate(small_rwkv, list(range(64)) * 10, search="best", progress=False)


@pytest.mark.parametrize("family", ["small_rwkv", "small_opt"])
def test_calibrate_greedy_applies_the_common_final_scale(family, request):
    model = request.getfixturevalue(family)  # OPT offers no cached residual stream: every run from the embedding
    ids = torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(5)).tolist()
    res = calibrate(model, ids, max_ppl_increase=0.02, tokens=256, context=32, check_tokens=512, progress=False,
                    search="greedy", levels=4)
    assert res.search == "greedy" and res.meta()["search"] == "greedy" and "greedy" in res.meta()["method"]
    assert res.ppl_increase <= 0.9 * 0.02 + 1e-9
    assert set(res.thetas) == {(i, p) for i in range(model.n_layer) for p in model.PROJECTIONS}
    assert model.get_thetas() == pytest.approx(res.thetas)
    assert any(p == "profile" for p in (h.get("phase") for h in res.history))


@pytest.fixture
def byte_model_and_text(tmp_path):
    """A small random RWKV over bytes (no tokenizer file) and a text file to calibrate it on."""
    from eventllm.models import RWKV, RWKVConfig
    from eventllm.models.checkpoints import save_eventllm

    text = tmp_path / "text.txt"
    text.write_text("A short calibration text about ships, whales and the sea; the captain looked at the sky. " * 300)
    model = RWKV(RWKVConfig(vocab_size=256, d_model=32, n_layer=2, d_ffn=64)).randomize(seed=5)
    return save_eventllm(model, tmp_path / "model.safetensors"), text


def test_cli_greedy_writes_thresholds_that_evaluate_applies(byte_model_and_text, tmp_path, capsys):
    model, text = byte_model_and_text
    thr, out = tmp_path / "thr.json", tmp_path / "ev.json"
    assert main(["calibrate", "--model", str(model), "--data", str(text), "--split", "all", "--max-ppl-increase", "0.01",
                 "--search", "greedy", "--levels", "4", "--tokens", "256", "--context", "64", "--check-tokens", "1024",
                 "-o", str(thr), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "greedy allocation" in printed and "loss budget" in printed
    doc = json.loads(thr.read_text())
    assert doc["meta"]["search"] == "greedy" and doc["meta"]["levels"] == 4
    assert main(["evaluate", "--model", str(model), "--thresholds", str(thr), "--data", str(text), "--split", "all",
                 "--max-tokens", "1024", "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())
    assert r["sparsity"]["mac_weighted"]["thresholded"] > r["sparsity"]["mac_weighted"]["natural"]


def test_cli_bad_search_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--data", "x", "--search", "best", "-o", "t.json"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("eventllm calibrate: error: argument --search: invalid choice: 'best'")
    assert all(f"'{s}'" in lines[0] for s in SEARCHES)


def test_cli_greedy_with_training_is_refused(byte_model_and_text, tmp_path, capsys):
    model, text = byte_model_and_text
    assert main(["calibrate", "--model", str(model), "--data", str(text), "--split", "all", "--method", "train", "--target-sparsity", "0.5",
                 "--search", "greedy", "-o", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --search greedy" in err[0] and not (tmp_path / "t.json").exists()
