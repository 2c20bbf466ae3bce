"""Sparsity-aware fine-tuning (`calibrate --method finetune`): the training forward is the thresholded model's, the
gradient through a threshold is its mask, θ rise towards the target, the teacher stays as it was, and the written
model and thresholds load and evaluate through the CLI."""

import copy
import json
import math

import pytest
import torch

from eventllm.cli import main
from eventllm.errors import ConfigError, DataError
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.models.threshold import ActivationThreshold
from eventllm.sparsity.calibrate import check_stream
from eventllm.sparsity.finetune import FinetunePaused, Schedule, SiteTracker, WeightAverage, _check, _end_state, _State, finetune

FAST = dict(batch_size=4, context=32, check_every=10, check_tokens=256, progress=False)


def test_training_forward_is_the_thresholded_models_forward(small_rwkv, tokens):
    small_rwkv.set_thetas(0.15)
    plain = copy.deepcopy(small_rwkv).eval()
    small_rwkv.set_dropout(0.0)
    small_rwkv.train()
    tracker = SiteTracker(small_rwkv, sample=512, generator=torch.Generator().manual_seed(0))
    tracker.quantiles = {(s.layer, s.projection): 0.5 for s in small_rwkv.threshold_sites()}
    with tracker:
        trained = small_rwkv(tokens)[0]
    assert torch.equal(trained, plain(tokens)[0])
    density, estimate = tracker.read()
    # the densities counted on the device are those the sparsity statistics count
    with torch.no_grad(), SparsityMeter(plain) as meter:
        plain(tokens)
    zeros = meter.zero_fraction()
    assert all(density[k] == pytest.approx(1.0 - zeros[k], abs=1e-9) for k in zeros)
    assert set(estimate) == set(zeros) and all(v >= 0 for v in estimate.values())


def test_gradient_through_a_threshold_is_its_mask():
    site = ActivationThreshold(0, "att.key", theta=0.5)
    x = torch.linspace(-1.5, 1.5, 61, requires_grad=True)
    upstream = torch.randn(61, generator=torch.Generator().manual_seed(0))
    (site(x) * upstream).sum().backward()
    mask = (x.detach().abs() > 0.5).float()
    assert torch.equal(x.grad, upstream * mask)
    assert torch.equal(site(x.detach()), x.detach() * mask)  # forward: exactly T_θ


def test_schedule_shrinks_every_density_to_the_level():
    d0 = {(0, "att.key"): 1.0, (0, "ffn.value"): 0.1}
    plan = Schedule(d0, s0=0.3, target=0.7, ramp=0.5, freeze=0.1, lr=1e-3, warmup=10)
    assert plan.level(0.0) == pytest.approx(0.3)
    assert plan.level(0.5) == plan.level(0.9) == pytest.approx(0.7 + 0.003)  # the target (+ margin) at the end of the ramp
    levels = [plan.level(t / 10) for t in range(6)]
    assert levels == sorted(levels)
    targets = plan.site_targets(0.65)
    factor = 0.35 / 0.7  # every density shrinks by (1 - level) / (1 - s0)
    assert targets[(0, "att.key")] == pytest.approx(1 - factor) and targets[(0, "ffn.value")] == pytest.approx(1 - 0.1 * factor)
    assert plan.rate(0, 0.0) == pytest.approx(1e-4) and plan.rate(50, 0.3) == 1e-3 and plan.rate(500, 1.0) == pytest.approx(1e-4)


def test_theta_rises_and_sparsity_climbs_to_the_target(small_rwkv, stream):
    r = finetune(small_rwkv, stream, stream, target_sparsity=0.5, steps=40, **FAST)
    trained = [h["train_mac_weighted"] for h in r.history if "train_mac_weighted" in h]
    checked = [h["check_mac_weighted"] for h in r.history if h.get("check")]
    thetas = [h["theta_mean"] for h in r.history if h.get("check")]
    assert trained[0] < 0.3 < 0.45 < trained[-1] and checked == sorted(checked)
    assert thetas[0] == 0.0 and thetas == sorted(thetas) and thetas[-1] > 0
    assert r.mac_weighted >= 0.5 - 1e-3 and r.natural_mac_weighted < 0.2
    assert r.seconds_to_target is not None and r.steps_to_target <= 40
    assert all(t > 0 for t in r.thetas.values()) and small_rwkv.get_thetas() == r.thetas
    # the model is left as a plain thresholded model whose check stream gives the reported figures
    check = check_stream(stream, 256, 0)
    with SparsityMeter(small_rwkv) as meter:
        nll = perplexity(small_rwkv, check).nll
    assert nll == pytest.approx(r.loss_final, abs=1e-6)
    assert SparsityReport.from_meter(small_rwkv, meter).mac_skipped() == pytest.approx(r.mac_weighted, abs=1e-9)


def test_teacher_stays_as_it_was_and_the_student_moves(small_rwkv, stream):
    teacher = copy.deepcopy(small_rwkv)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    r = finetune(small_rwkv, stream, stream, target_sparsity=0.4, steps=20, teacher=teacher, **FAST)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert r.loss_dense == pytest.approx(perplexity(teacher, check_stream(stream, 256, 0)).nll, abs=1e-9)
    assert any(not torch.equal(before[k], v) for k, v in small_rwkv.state_dict().items())


def test_bound_keeps_the_end_state_within_it(small_rwkv, stream):
    r = finetune(small_rwkv, stream, stream, max_ppl_increase=0.002, steps=30, **FAST)
    assert r.within_bound and r.ppl_increase <= 0.9 * 0.002
    assert r.mac_weighted > r.natural_mac_weighted


def test_the_ramp_slows_after_a_check_above_the_bound(small_rwkv, stream):
    # a bound this tight fails often: each failure halves the ramp's pace, each pass gives a quarter back
    r = finetune(small_rwkv, stream, stream, max_ppl_increase=0.002, steps=60, **(FAST | {"check_every": 5}))
    checks = [h for h in r.history if h.get("check") and "pace" in h]
    assert any(not h["ok"] for h in checks) and any(h["ok"] for h in checks)
    pace = 1.0
    for h in checks:
        pace = min(1.0, pace * 1.25) if h["ok"] else max(0.125, pace * 0.5)
        assert h["pace"] == pytest.approx(pace)
    # after a passing check the level (a linear ramp: only a bound is given) rises by the pace × the full-pace rise
    level = {h["step"]: h["level"] for h in r.history}
    full = (0.98 - level[0]) / (0.7 * 60)  # MAX_LEVEL, over the ramp's 70% of 60 steps
    slowed = [h for h in checks if h["ok"] and h["pace"] < 1 and h["step"] + 2 in level]
    assert slowed
    for h in slowed:
        assert level[h["step"] + 2] - level[h["step"] + 1] == pytest.approx(h["pace"] * full, rel=1e-6)


def test_weight_average_is_the_moving_average_and_swaps_back():
    lin = torch.nn.Linear(3, 2)
    w0 = lin.weight.detach().clone()
    avg = WeightAverage(lin, 0.75)
    expect = w0.clone()
    for k in range(3):
        with torch.no_grad():
            lin.weight.add_(float(k + 1))
        avg.update()
        expect = 0.75 * expect + 0.25 * lin.weight.detach()
    raw = lin.weight.detach().clone()
    assert torch.allclose(avg.avg[0], expect, atol=1e-6)  # w0 + 0.25·(1·0.75² + 3·0.75 + 6)
    assert torch.allclose(expect, w0 + 0.25 * (1 * 0.75**2 + 3 * 0.75 + 6), atol=1e-6)
    with avg.swapped():
        assert torch.equal(lin.weight, avg.avg[0])
    assert torch.equal(lin.weight, raw)  # the trained weights again after the block
    avg.load()
    assert torch.equal(lin.weight, avg.avg[0])
    with pytest.raises(ConfigError, match="decay per step"):
        WeightAverage(lin, 1.0)


def test_weight_averaged_run_returns_the_weights_it_measured(small_rwkv, stream):
    """With --weight-average the checks measure the averaged weights and the run ends on them: the model returned
    gives the reported check figures, and its weights are not the last iterate's (a plain run from the same seed)."""
    plain = copy.deepcopy(small_rwkv)
    r = finetune(small_rwkv, stream, stream, target_sparsity=0.4, steps=20, lr=3e-3, weight_average=0.9, **FAST)
    assert r.settings["weight_average"] == 0.9
    check = check_stream(stream, 256, 0)
    assert perplexity(small_rwkv, check).nll == pytest.approx(r.loss_final, abs=1e-6)
    q = finetune(plain, stream, stream, target_sparsity=0.4, steps=20, lr=3e-3, **FAST)
    assert q.settings["weight_average"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(small_rwkv.parameters(), plain.parameters()))


def test_bad_requests_name_the_fix(small_rwkv, stream):
    with pytest.raises(ConfigError, match="needs a goal"):
        finetune(small_rwkv, stream, stream, **FAST)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        finetune(small_rwkv, stream, stream, target_sparsity=1.5, **FAST)
    with pytest.raises(ConfigError, match="`weight_average` = 1.5: give a decay per step"):
        finetune(small_rwkv, stream, stream, target_sparsity=0.5, weight_average=1.5, **FAST)
    with pytest.raises(DataError, match="more than 33 tokens of training text"):
        finetune(small_rwkv, stream[:20], stream, target_sparsity=0.5, **FAST)
    small_rwkv.set_scores("wina")
    with pytest.raises(ConfigError, match="one θ per site"):
        finetune(small_rwkv, stream, stream, target_sparsity=0.5, **FAST)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
def test_cuda_without_a_gpu_is_refused(small_rwkv, stream):
    with pytest.raises(ConfigError, match="no CUDA device"):
        finetune(small_rwkv, stream, stream, target_sparsity=0.5, device="cuda", **FAST)


def test_cli_writes_a_model_and_thresholds_that_evaluate(tmp_path, capsys, data_dir):
    thr, ft = tmp_path / "ft" / "thr.json", tmp_path / "ft" / "ft.safetensors"
    rc = main(["calibrate", "--method", "finetune", "--model", "zoo:rwkv4-tiny", "--data", str(data_dir / "gutenberg"),
               "--target-sparsity", "0.55", "--steps", "4", "--context", "16",
               "--batch-size", "1", "--check-every", "2", "--check-tokens", "128", "--device", "cpu", "-q",
               "-o", str(thr), "--output-model", str(ft)])
    out = capsys.readouterr().out
    assert rc == 0 and "fine-tuned 4 steps" in out and "MAC-weighted" in out
    assert (ft.parent / "tokenizer.json").exists()  # the model file is loaded with the tokenizer beside it
    doc = json.loads(thr.read_text())
    assert doc["model"]["name"] == str(ft) and doc["meta"]["finetuned_from"] == "zoo:rwkv4-tiny"
    ev = tmp_path / "ev.json"
    rc = main(["evaluate", "--model", str(ft), "--thresholds", str(thr), "--data", str(data_dir / "gutenberg"),
               "--split", "test", "--max-tokens", "256", "-q", "--json", str(ev)])
    assert rc == 0
    sp = json.loads(ev.read_text())["sparsity"]["mac_weighted"]
    assert sp["thresholded"] > sp["natural"]
    # the thresholds are tied to the fine-tuned weights, not to the model they came from
    rc = main(["evaluate", "--model", "zoo:rwkv4-tiny", "--thresholds", str(thr), "--data", str(data_dir / "gutenberg"),
               "--max-tokens", "64", "-q"])
    assert rc == 2 and "fingerprint" in capsys.readouterr().err
    # fine-tuned again, held to the original (--teacher): the bound's reference is the original's check loss
    thr2, ft2 = tmp_path / "ft2" / "thr.json", tmp_path / "ft2" / "ft.safetensors"
    rc = main(["calibrate", "--method", "finetune", "--model", str(ft), "--thresholds", str(thr), "--teacher", "zoo:rwkv4-tiny",
               "--data", str(data_dir / "gutenberg"), "--target-sparsity", "0.6", "--steps", "2", "--context", "16",
               "--batch-size", "1", "--check-every", "2", "--check-tokens", "128", "--weight-average", "0.9", "--device", "cpu",
               "--output-dtype", "bfloat16", "-q", "-o", str(thr2), "--output-model", str(ft2)])
    out = capsys.readouterr().out
    assert rc == 0 and "vs the dense zoo:rwkv4-tiny" in out
    meta2 = json.loads(thr2.read_text())["meta"]
    assert meta2["teacher"] == "zoo:rwkv4-tiny" and meta2["finetuned_from"] == str(ft)
    assert meta2["settings"]["weight_average"] == 0.9
    assert meta2["loss_dense_teacher"] == pytest.approx(doc["meta"]["loss_dense_teacher"], abs=1e-9)
    # written in bfloat16: the thresholds file is tied to the rounded weights, and its "rounded" figures are theirs
    from safetensors import safe_open

    with safe_open(str(ft2), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert "rounded to bfloat16" in out and meta2["rounded"]["dtype"] == "bfloat16"
    from eventllm.data import cached_token_stream
    from eventllm.pipeline import load
    from eventllm.sparsity.finetune import _check

    again = load(str(ft2), thr2)  # refused unless the fingerprint is the bfloat16 model's
    check = check_stream(cached_token_stream(data_dir / "gutenberg", "valid", again.tokenizer, progress=False), 128, 0)
    nll, rep = _check(again.model, check)
    assert math.exp(nll - meta2["loss_dense_teacher"]) - 1 == pytest.approx(meta2["rounded"]["ppl_increase_on_check_vs_teacher"], abs=1e-6)
    assert rep.mac_skipped() == pytest.approx(meta2["rounded"]["mac_weighted_sparsity_on_check"], abs=1e-9)


def test_recheck_holds_the_bound_on_fresh_text(tmp_path, capsys, data_dir):
    # a short run aiming high: its end state is over the bound on valid text beside the check stream, and the recheck
    # scales θ down until it is within 0.9 × 1% there
    thr, ft = tmp_path / "thr.json", tmp_path / "ft.safetensors"
    rc = main(["calibrate", "--method", "finetune", "--model", "zoo:rwkv4-tiny", "--data", str(data_dir / "gutenberg"),
               "--target-sparsity", "0.7", "--max-ppl-increase", "0.01", "--steps", "4", "--context", "16", "--batch-size", "1",
               "--check-every", "2", "--check-tokens", "128", "--recheck-tokens", "512", "--device", "cpu", "-q",
               "-o", str(thr), "--output-model", str(ft)])
    out = capsys.readouterr().out
    assert rc == 0 and "recheck on 512 more tokens of [valid]" in out
    rec = json.loads(thr.read_text())["meta"]["recheck"]
    assert rec["ppl_increase_vs_teacher_before"] > 0.009 >= rec["ppl_increase_vs_teacher"] and 0 < rec["scale"] < 1
    assert rec["within_bound"] and f"θ scaled by {rec['scale']:.3f}" in out
    from eventllm.data import cached_token_stream
    from eventllm.pipeline import load
    from eventllm.sparsity.calibrate import check_stream_start
    from eventllm.sparsity.finetune import _check

    tuned, dense = load(str(ft), thr), load("zoo:rwkv4-tiny", None)
    ids = torch.as_tensor(cached_token_stream(data_dir / "gutenberg", "valid", dense.tokenizer, progress=False), dtype=torch.long)
    start, n = check_stream_start(ids.numel(), 128, 0)
    assert n == 128 and ids.numel() > 128 + 512
    fresh = torch.cat([ids[:start], ids[start + n:]])[:512]  # the 512 tokens beside the check stream
    nll, rep = _check(tuned.model, fresh)
    inc = math.exp(nll - _check(dense.model, fresh)[0]) - 1
    assert inc == pytest.approx(rec["ppl_increase_vs_teacher"], abs=1e-6) and inc <= 0.009
    assert rep.mac_skipped() == pytest.approx(rec["mac_weighted_sparsity"], abs=1e-9)
    for args, says in ((["--method", "finetune", "--target-sparsity", "0.5", "--output-model", str(tmp_path / "b.safetensors")],
                        "give it with --max-ppl-increase"),
                       (["--max-ppl-increase", "0.01"], "is for --method finetune"),
                       # the check stream takes the whole split: refused before the run, nothing written
                       (["--method", "finetune", "--max-ppl-increase", "0.01", "--check-tokens", "100000000", "--device", "cpu",
                         "--output-model", str(tmp_path / "b.safetensors")], "has no tokens beside")):
        rc = main(["calibrate", "--model", "zoo:rwkv4-tiny", "--data", str(data_dir / "gutenberg"), "--recheck-tokens", "512",
                   "-o", str(tmp_path / "b.json"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and says in err[0]
        assert not (tmp_path / "b.json").exists() and not (tmp_path / "b.safetensors").exists()


def test_a_paused_run_goes_on_from_its_checkpoint_as_if_it_had_not_stopped(small_rwkv, stream, tmp_path):
    """A run paused at step 13 (after a check that kept a snapshot, with the weight average and the ramp mid-way) and
    resumed from its checkpoint ends exactly where the run that did not stop ends: weights, θ, every step's loss."""
    kw = dict(target_sparsity=0.5, max_ppl_increase=0.05, steps=30, lr=3e-3, weight_average=0.9, **FAST)
    straight = copy.deepcopy(small_rwkv)
    a = finetune(straight, stream, stream, **kw)
    ck = tmp_path / "run.pt"
    with pytest.raises(FinetunePaused) as paused:
        finetune(copy.deepcopy(small_rwkv), stream, stream, checkpoint=ck, pause_after_steps=13, **kw)
    assert paused.value.step == 13 and ck.exists()
    resumed = copy.deepcopy(small_rwkv)
    b = finetune(resumed, stream, stream, checkpoint=ck, **kw)
    assert any(h.get("check") and h["ok"] and 0 < h["step"] < 13 for h in a.history)  # a snapshot was kept before the pause
    assert (b.steps, b.tokens, b.kept_step, b.thetas) == (a.steps, a.tokens, a.kept_step, a.thetas)
    assert all(torch.equal(x, y) for x, y in zip(straight.state_dict().values(), resumed.state_dict().values()))
    assert [h["kl"] for h in b.history if "kl" in h] == [h["kl"] for h in a.history if "kl" in h]
    assert [h.get("pace") for h in b.history] == [h.get("pace") for h in a.history]
    assert b.loss_final == a.loss_final and b.mac_weighted == a.mac_weighted
    # a checkpoint goes on only with the run it came from
    with pytest.raises(ConfigError, match="lr = 0.003, this call has 0.001"):
        finetune(copy.deepcopy(small_rwkv), stream, stream, checkpoint=ck, **(kw | {"lr": 1e-3}))
    with pytest.raises(ConfigError, match="another `model`"):
        finetune(copy.deepcopy(small_rwkv).randomize(seed=5), stream, stream, checkpoint=ck, **kw)
    with pytest.raises(ConfigError, match="another training text"):
        finetune(copy.deepcopy(small_rwkv), stream[:2000], stream, checkpoint=ck, **kw)
    with pytest.raises(ConfigError, match="give `checkpoint` PATH"):
        finetune(copy.deepcopy(small_rwkv), stream, stream, pause_after_steps=3, **kw)
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable fine-tuning checkpoint"):
        finetune(copy.deepcopy(small_rwkv), stream, stream, checkpoint=ck, **kw)


def test_cli_pauses_and_goes_on_in_a_second_call(tmp_path, capsys, data_dir):
    thr, ft, ck = tmp_path / "thr.json", tmp_path / "ft.safetensors", tmp_path / "run.pt"
    cmd = ["calibrate", "--method", "finetune", "--model", "zoo:rwkv4-tiny", "--data", str(data_dir / "gutenberg"),
           "--target-sparsity", "0.55", "--steps", "4", "--context", "16", "--batch-size", "1", "--check-every", "2",
           "--check-tokens", "128", "--device", "cpu", "-q", "-o", str(thr), "--output-model", str(ft), "--checkpoint", str(ck)]
    rc = main(cmd + ["--pause-after", "0.001"])  # pauses after its first step
    out = capsys.readouterr().out
    assert rc == 0 and "paused at step 1" in out and ck.exists() and not thr.exists() and not ft.exists()
    rc = main(cmd[:-2] + ["--checkpoint", str(ck), "--lr", "1e-3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "lr = 0.0001, this call has 0.001" in err[0] and ck.exists()
    rc = main(cmd)
    out = capsys.readouterr().out
    assert rc == 0 and "fine-tuned 4 steps" in out and "removed the checkpoint" in out
    assert thr.exists() and ft.exists() and not ck.exists()
    for extra, says in ((["--pause-after", "5"], "give --checkpoint PATH"), (["--checkpoint", str(thr)], "also an output")):
        rc = main(cmd[:-2] + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and says in err[0]


def test_cli_refuses_a_foreign_tokenizer_beside_the_model(tmp_path, capsys, data_dir):
    (tmp_path / "tokenizer.json").write_text("{}")
    rc = main(["calibrate", "--method", "finetune", "--model", "zoo:rwkv4-tiny", "--data", str(data_dir / "gutenberg"),
               "--target-sparsity", "0.5", "--device", "cpu", "-q", "-o", str(tmp_path / "thr.json"),
               "--output-model", str(tmp_path / "ft.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "another tokenizer" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]


def test_an_end_within_the_bound_short_of_the_target_has_its_theta_raised(small_rwkv, stream):
    kw = dict(target_sparsity=0.99, max_ppl_increase=0.01, steps=20, **FAST)  # 0.99: beyond the schedule's 98%
    plain = finetune(copy.deepcopy(small_rwkv), stream, stream, raise_end=False, **kw)
    raised = finetune(small_rwkv, stream, stream, **kw)
    assert plain.end_scale == 1.0 and raised.end_scale > 1.0
    assert raised.kept_step == plain.kept_step
    assert raised.thetas == pytest.approx({k: v * raised.end_scale for k, v in plain.thetas.items()}, rel=1e-12)
    assert raised.within_bound and raised.ppl_increase <= 0.9 * 0.01
    assert raised.mac_weighted > plain.mac_weighted
    # the raised model is what the result reports: its check stream measured again
    with SparsityMeter(small_rwkv) as meter:
        nll = perplexity(small_rwkv, check_stream(stream, 256, 0)).nll
    assert nll == pytest.approx(raised.loss_final, abs=1e-9)
    assert SparsityReport.from_meter(small_rwkv, meter).mac_skipped() == pytest.approx(raised.mac_weighted, abs=1e-9)


def test_a_final_state_above_the_bound_is_offered_with_its_theta_scaled_down(small_rwkv, stream):
    check = check_stream(stream, 256, 0)
    small_rwkv.set_thetas(0.0)
    dense, _ = _check(small_rwkv, check)
    small_rwkv.set_thetas(3.0)
    thetas = small_rwkv.get_thetas()
    nll, rep = _check(small_rwkv, check)

    def allowed(x: float) -> bool:
        return math.exp(x - dense) - 1.0 <= 0.01

    assert not allowed(nll)
    chosen = _end_state(small_rwkv, check, _State(5, nll, rep, "final", thetas), [], allowed, 0.99, True)
    assert chosen.source == "final" and 0 < chosen.scale < 1 and allowed(chosen.nll)
    assert chosen.thetas == {k: v * chosen.scale for k, v in thetas.items()}
    assert small_rwkv.get_thetas() == thetas  # the model is left at the final θ; the caller sets the chosen ones
    small_rwkv.set_thetas(chosen.thetas)
    assert _check(small_rwkv, check)[0] == chosen.nll  # the state's figures are its θ's check run
