"""RWKV-7 (x070): equal to BlinkDL's `rwkv` package (RWKV_x070, CPU fp32), sequence mode = step mode, .pth loading."""

import importlib.util
import os

import pytest
import torch

from eventllm.errors import CheckpointError, ConfigError
from eventllm.models.checkpoints import load_checkpoint, save_blinkdl
from eventllm.models.rwkv7 import RWKV7, RWKV7Config

TOL = 1e-4
# odd shapes: 3 heads of 32, LoRA ranks unlike each other and unlike BlinkDL's multiples of 32
ODD = dict(vocab_size=53, d_model=96, n_layer=3, head_size=32, d_ffn=200, d_decay=24, d_iclr=16, d_value=8, d_gate=40)


def reference_x070():
    """The `rwkv` package's RWKV_x070 class. The package picks RWKV-7 when it is imported with RWKV_V7_ON=1; the
    RWKV-4 tests import it without, so a private copy of the module is executed here (sys.modules is untouched)."""
    old = os.environ.get("RWKV_V7_ON")
    os.environ["RWKV_V7_ON"] = "1"
    try:
        spec = importlib.util.find_spec("rwkv.model")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if old is None:
            del os.environ["RWKV_V7_ON"]
        else:
            os.environ["RWKV_V7_ON"] = old
    return module.RWKV_x070


@pytest.fixture(scope="module")
def odd_pth(tmp_path_factory):
    """A random RWKV-7 of odd shapes written as a BlinkDL .pth, and the `rwkv` package's model of that file."""
    path = save_blinkdl(RWKV7(RWKV7Config(**ODD)).randomize(seed=1), tmp_path_factory.mktemp("x070") / "odd.pth")
    ref = reference_x070()(str(path.with_suffix("")), "cpu fp32")
    return path, ref


@pytest.fixture(scope="module")
def odd_model(odd_pth):
    return load_checkpoint(odd_pth[0])


@pytest.fixture
def seq():
    return torch.randint(0, ODD["vocab_size"], (2, 37), generator=torch.Generator().manual_seed(3))


def run_steps(model, idx, state=None):
    state = model.init_state(idx.shape[0]) if state is None else state
    outs = []
    with torch.no_grad():
        for t in range(idx.shape[1]):
            logits, state = model(idx[:, t : t + 1], state)
            outs.append(logits)
    return torch.cat(outs, 1), state


def test_pth_loads_as_rwkv7_of_the_files_shapes(odd_model):
    assert isinstance(odd_model, RWKV7)
    c = odd_model.config
    assert (c.n_head, c.head_size, c.d_ffn, c.d_decay, c.d_iclr, c.d_value, c.d_gate) == (3, 32, 200, 24, 16, 8, 40)
    assert not hasattr(odd_model.blocks[0].att, "v1") and hasattr(odd_model.blocks[1].att, "v1")


def test_sequence_mode_matches_rwkv_package(odd_pth, odd_model, seq):
    _, ref = odd_pth
    expected, ref_state = ref.forward(seq[0].tolist(), None, full_output=True)
    with torch.no_grad():
        ours, state = odd_model(seq[:1])
    assert (ours[0] - expected).abs().max() <= TOL
    for i in range(odd_model.n_layer):
        assert (state.att_shift[i, 0] - ref_state[3 * i]).abs().max() <= TOL
        assert (state.wkv[i, 0] - ref_state[3 * i + 1]).abs().max() <= TOL
        assert (state.ffn_shift[i, 0] - ref_state[3 * i + 2]).abs().max() <= TOL


def test_step_mode_matches_rwkv_package_token_by_token(odd_pth, odd_model, seq):
    _, ref = odd_pth
    state, logits = None, []
    for t in seq[1, :12].tolist():
        out, state = ref.forward([t], state)
        logits.append(out.clone())
    ours, _ = run_steps(odd_model, seq[1:, :12])
    assert (ours[0] - torch.stack(logits)).abs().max() <= TOL


def test_sequence_mode_equals_step_mode_and_state_carries(odd_model, seq):
    with torch.no_grad():
        whole, whole_state = odd_model(seq)
        first, state = odd_model(seq[:, :20])
        second, split_state = odd_model(seq[:, 20:], state)
    steps, step_state = run_steps(odd_model, seq)
    assert (whole - steps).abs().max() <= TOL
    assert (torch.cat([first, second], 1) - whole).abs().max() <= TOL
    for a, b, c in zip(whole_state.tensors(), step_state.tensors(), split_state.tensors()):
        assert (a - b).abs().max() <= TOL and (a - c).abs().max() <= TOL


def test_cached_prefix_gives_the_full_logits(odd_model, seq):
    with torch.no_grad():
        full, _ = odd_model(seq)
        for layer in (0, 2):
            assert (odd_model.logits_from(layer, odd_model.residual_before(seq, layer)) - full).abs().max() <= 1e-5


def test_gradients_reach_every_parameter(seq):
    model = RWKV7(RWKV7Config(**{**ODD, "n_layer": 2})).randomize(seed=4)
    logits, _ = model(seq[:, :6])
    logits.square().mean().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())


def test_save_load_round_trip_is_exact(odd_model, tmp_path):
    again = load_checkpoint(save_blinkdl(odd_model, tmp_path / "again.pth"))
    assert all(torch.equal(a, b) for a, b in zip(odd_model.state_dict().values(), again.state_dict().values()))


def test_a_rwkv6_pth_is_named_with_the_fix(tmp_path):
    w = {"emb.weight": torch.zeros(5, 8), "blocks.0.att.key.weight": torch.zeros(8, 8), "blocks.0.att.time_maa_x": torch.zeros(1, 1, 8),
         "blocks.0.att.ln_x.weight": torch.zeros(8)}
    torch.save(w, tmp_path / "v6.pth")
    with pytest.raises(CheckpointError, match="RWKV-5/6 checkpoint.*RWKV-7 \\(x070\\)"):
        load_checkpoint(tmp_path / "v6.pth")


def test_an_incomplete_x070_pth_names_the_missing_key(odd_model, tmp_path):
    w = odd_model.blinkdl_tensors()
    del w["blocks.1.att.k_a"]
    torch.save(w, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="missing key 'blocks.1.att.k_a'"):
        load_checkpoint(tmp_path / "cut.pth")
    w = odd_model.blinkdl_tensors()
    del w["blocks.0.att.g1"]
    torch.save(w, tmp_path / "cut2.pth")
    with pytest.raises(CheckpointError, match="missing key 'blocks.0.att.g1'.*RWKV-7 \\(x070\\)"):
        load_checkpoint(tmp_path / "cut2.pth")


def test_config_rejects_a_head_size_that_does_not_divide_the_width():
    with pytest.raises(ConfigError, match="not a multiple of head_size"):
        RWKV7Config(d_model=96, head_size=64)
    assert RWKV7Config(vocab_size=10, d_model=64, n_layer=1).d_decay == 32
