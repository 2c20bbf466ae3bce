"""Loading and saving in every format, and one clear error for each kind of bad file."""

import json

import pytest
import torch

from eventllm.errors import CheckpointError
from eventllm.models.checkpoints import load_checkpoint, save_blinkdl, save_eventllm, save_hf


def same_logits(a, b, tokens):
    with torch.no_grad():
        return torch.equal(a(tokens)[0], b(tokens)[0])


@pytest.mark.parametrize("fixture", ["small_rwkv", "small_opt"])
@pytest.mark.parametrize("fmt", ["eventllm", "hf"])
def test_round_trip(fixture, fmt, request, tokens, tmp_path):
    model = request.getfixturevalue(fixture)
    path = save_eventllm(model, tmp_path / "m.safetensors") if fmt == "eventllm" else save_hf(model, tmp_path / "hf")
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert same_logits(model, loaded, tokens)


def test_blinkdl_round_trip(small_rwkv, tokens, tmp_path):
    loaded = load_checkpoint(save_blinkdl(small_rwkv, tmp_path / "m.pth"))
    assert same_logits(small_rwkv, loaded, tokens)


def test_transformers_reads_our_hf_folder(small_rwkv, tokens, tmp_path):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(save_hf(small_rwkv, tmp_path / "hf"))).eval()
    with torch.no_grad():
        assert (hf(tokens).logits - small_rwkv(tokens)[0]).abs().max() <= 1e-4


def test_half_precision_file_loads_as_float32(small_rwkv, tmp_path):
    loaded = load_checkpoint(save_eventllm(small_rwkv, tmp_path / "m.safetensors", dtype=torch.bfloat16))
    assert loaded.emb.weight.dtype == torch.float32
    assert torch.allclose(loaded.emb.weight, small_rwkv.emb.weight, rtol=1e-2, atol=1e-2)


def test_corrupt_pth_names_the_file(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(CheckpointError, match="broken.pth: cannot be read as a PyTorch weights file"):
        load_checkpoint(bad)


def test_truncated_safetensors_names_the_file(small_rwkv, tmp_path):
    path = save_eventllm(small_rwkv, tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="m.safetensors: not a readable safetensors file"):
        load_checkpoint(path)


def test_missing_key_is_named(small_rwkv, tmp_path):
    sd = {k: v.reshape(1, 1, -1) if "time_mix" in k else v for k, v in small_rwkv.state_dict().items()}
    del sd["blocks.1.att.value.weight"]
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="m.pth: missing key 'blocks.1.att.value.weight'"):
        load_checkpoint(tmp_path / "m.pth")


def test_shape_mismatch_is_named(small_rwkv, tmp_path):
    sd = {k: v.reshape(1, 1, -1) if "time_mix" in k else v for k, v in small_rwkv.state_dict().items()}
    sd["blocks.2.ffn.value.weight"] = torch.zeros(32, 50)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"key 'blocks.2.ffn.value.weight' has shape \(32, 50\), expected \(32, 96\)"):
        load_checkpoint(tmp_path / "m.pth")


def test_nan_weights_are_rejected(small_rwkv, tmp_path):
    sd = {k: v.reshape(1, 1, -1) if "time_mix" in k else v.clone() for k, v in small_rwkv.state_dict().items()}
    sd["head.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="'head.weight' contains NaN"):
        load_checkpoint(tmp_path / "m.pth")


def test_unknown_architecture_is_named(small_rwkv, tmp_path):
    folder = save_hf(small_rwkv, tmp_path / "hf")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown architecture model_type='llama'"):
        load_checkpoint(folder)


def test_rwkv5_checkpoint_is_refused(small_rwkv, tmp_path):
    sd = {k: v.reshape(1, 1, -1) if "time_mix" in k else v for k, v in small_rwkv.state_dict().items()}
    sd["blocks.0.att.ln_x.weight"] = torch.ones(32)
    torch.save(sd, tmp_path / "v5.pth")
    with pytest.raises(CheckpointError, match="RWKV-5/6 checkpoint"):
        load_checkpoint(tmp_path / "v5.pth")


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown model file type '.onnx'"):
        load_checkpoint(tmp_path / "m.onnx")


def test_hf_folder_with_pytorch_model_bin(small_opt, tokens, tmp_path):
    folder = save_hf(small_opt, tmp_path / "hf")
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert same_logits(small_opt, load_checkpoint(folder), tokens)
