"""The training-based baseline: θ learned through snnTorch's surrogate gradient reach the target sparsity."""

import pytest
import torch

from eventllm.cli import main
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.sparsity.train_baseline import train_thresholds


def test_learned_thresholds_reach_the_target_sparsity(small_rwkv):
    ids = torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(0)).tolist()
    r = train_thresholds(small_rwkv, ids, 0.5, tokens=512, context=64, max_steps=300, settle_steps=5, progress=False)
    assert r.steps_to_target is not None and r.steps_to_target <= r.steps
    assert r.sparsity == pytest.approx(0.5, abs=0.01)  # the common rescale lands on the target
    assert all(t > 0 for t in r.thetas.values()) and small_rwkv.get_thetas() == r.thetas
    # the model is left as a plain thresholded model: measure it independently
    with torch.no_grad(), SparsityMeter(small_rwkv) as meter:
        small_rwkv(torch.tensor([ids[:200]]))
    assert SparsityReport.from_meter(small_rwkv, meter).average() > 0.3
    assert all(s.surrogate is None for s in small_rwkv.threshold_sites())


def test_surrogate_forward_is_exactly_the_threshold(small_rwkv):
    import snntorch.surrogate as surrogate
    import torch.nn.functional as F

    site = small_rwkv.threshold_sites()[0]
    x = torch.linspace(-1, 1, 101)
    rho = torch.nn.Parameter(torch.tensor(0.0))
    site.surrogate = (rho, surrogate.atan())
    y = site(x)
    site.surrogate = None
    site.theta = float(F.softplus(rho.detach()))
    assert torch.equal(y, site(x))


def test_cli_train_method_needs_a_target(tmp_path, capsys, data_dir):
    rc = main(["calibrate", "--method", "train", "--data", str(data_dir / "gutenberg"), "-o", str(tmp_path / "t.json"), "-q"])
    assert rc == 2 and "--target-sparsity" in capsys.readouterr().err
