"""Reading and writing model files: Hugging Face folders, BlinkDL RWKV-4 and RWKV-7 `.pth`, and eventllm safetensors.

    load_checkpoint(path)            -> CausalLM (architecture detected from the files)
    save_eventllm(model, path)       one .safetensors file with the config in its metadata (our format); a quantised
                                     model's weights as int8 integers with their float32 scales
    save_hf(model, folder)           config.json + model.safetensors, loadable by transformers
    save_blinkdl(model, path)        RWKV-4 / RWKV-7 .pth in BlinkDL's layout, loadable by the `rwkv` package

Every problem with a file raises `CheckpointError` naming the file (and the key, for a bad tensor).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eventllm.atomic import atomic_path
from eventllm.config import read_json
from eventllm.errors import CheckpointError, ConfigError
from eventllm.models import ARCHS
from eventllm.models.base import CausalLM
from eventllm.models.rwkv import RWKV, RWKVConfig
from eventllm.models.rwkv7 import RWKV7

FORMAT = "eventllm"
FORMAT_VERSION = "1"


# --- names ----------------------------------------------------------------------------------------------
# --- reading --------------------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); re-export or re-download it") from None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or unsafe file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only load failed" in first.lower():  # torch's advice (weights_only=False) would run the file's code
            first = "not a plain file of tensors: it is not a torch archive, or it holds objects that eventllm does not unpickle"
        raise CheckpointError(f"{path}: cannot be read as a PyTorch weights file ({first[:200]}); pass a BlinkDL .pth, a "
                              ".safetensors file or a Hugging Face folder") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), found {type(obj).__name__}")
    return obj


def _fill(model: CausalLM, tensors: dict[str, torch.Tensor], path: Path, target=None) -> CausalLM:
    """Copy `tensors` into the model, checking that every key is present, known and of the right shape."""
    target = model if target is None else target
    expected = target.state_dict()
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise CheckpointError(f"{path}: missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + "; the file is incomplete or of another architecture")
    unknown = [k for k in tensors if k not in expected]
    if unknown:
        raise CheckpointError(f"{path}: unexpected key {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                              + f"; not a {model.arch} checkpoint of this layout")
    for k, want in expected.items():
        got = tensors[k]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"{path}: key {k!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)} from the config")
        if not torch.isfinite(got.float()).all():
            raise CheckpointError(f"{path}: key {k!r} contains NaN or infinite values; the checkpoint is corrupt")
    target.load_state_dict({k: tensors[k].to(want.dtype) for k, want in expected.items()}, strict=True)
    return model.eval()


def _load_blinkdl(path: Path) -> RWKV | RWKV7:
    w = _read_torch(path)
    if "emb.weight" not in w or "blocks.0.att.key.weight" not in w:
        raise CheckpointError(f"{path}: missing key 'emb.weight' or 'blocks.0.att.key.weight'; not a BlinkDL RWKV checkpoint")
    if "blocks.0.att.r_k" in w:
        return _load_blinkdl_x070(path, w)
    if any(".ln_x." in k or "time_faaaa" in k or "time_maa" in k for k in w):
        raise CheckpointError(f"{path}: this is an RWKV-5/6 checkpoint (it has ln_x / time_faaaa / time_maa keys and no att.r_k); "
                              "eventllm reads RWKV-4 and RWKV-7 (x070) .pth files: convert it to one of those")
    try:
        n_layer = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
        cfg = RWKVConfig(
            vocab_size=w["emb.weight"].shape[0], d_model=w["emb.weight"].shape[1], n_layer=n_layer,
            d_attention=w["blocks.0.att.key.weight"].shape[0], d_ffn=w["blocks.0.ffn.key.weight"].shape[0],
        )
    except KeyError as e:
        raise CheckpointError(f"{path}: missing key {e.args[0]!r}; not a complete BlinkDL RWKV-4 checkpoint") from None
    except (ValueError, IndexError):
        raise CheckpointError(f"{path}: the keys and shapes are not those of a BlinkDL RWKV-4 checkpoint "
                              "(blocks.N.… with 2-D weight matrices)") from None
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    tensors = {k: (v.reshape(-1) if ".time_" in k else v).float() for k, v in w.items()}
    return _fill(RWKV(cfg), tensors, path)


def _load_blinkdl_x070(path: Path, w: dict[str, torch.Tensor]) -> RWKV7:
    try:
        cfg = RWKV7.config_from_blinkdl(w)
    except KeyError as e:
        raise CheckpointError(f"{path}: missing key {e.args[0]!r}; not a complete BlinkDL RWKV-7 (x070) checkpoint") from None
    except (ValueError, IndexError, AttributeError):
        raise CheckpointError(f"{path}: the keys and shapes are not those of a BlinkDL RWKV-7 (x070) checkpoint "
                              "(blocks.N.att.r_k [heads, head size], LoRA matrices att.w1 [C, D], …)") from None
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return _fill(RWKV7(cfg), RWKV7.tensors_from_blinkdl({k: v.float() for k, v in w.items()}), path)


def _load_hf_folder(folder: Path) -> CausalLM:
    cfg_path = folder / "config.json"
    hf = _read_hf_config(cfg_path)
    model_type = hf.get("model_type")
    families = {cls.hf_model_type: cls for cls, _ in ARCHS.values() if cls.hf_model_type}
    if model_type not in families:
        raise CheckpointError(f"{cfg_path}: unknown architecture model_type={model_type!r}; eventllm reads "
                              + ", ".join(repr(t) for t in families))
    family = families[model_type]
    # the config is checked (types, ranges, size against the free memory) before a weight is read
    try:
        cfg = family.config_from_hf(hf)
    except KeyError as e:
        raise CheckpointError(f"{cfg_path}: missing key {e.args[0]!r}; not a complete Hugging Face {model_type} config") from None
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()]
    if not weights:
        raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin beside config.json (sharded checkpoints: merge them first)")
    wpath = weights[0]
    tensors = _read_safetensors(wpath)[0] if wpath.suffix == ".safetensors" else _read_torch(wpath)
    tensors = family.tensors_from_hf({k: v.float() for k, v in tensors.items()})
    model = family(cfg)
    return _fill(model, model.complete_tensors(tensors), wpath, target=model.weights_module())


def _read_hf_config(cfg_path: Path) -> dict:
    """A Hugging Face config.json as a dict; anything else (not JSON, not an object, unreadable) is refused."""
    hf = read_json(cfg_path, "Hugging Face config", "re-download the model folder", CheckpointError)
    if not isinstance(hf, dict):
        raise CheckpointError(f"{cfg_path}: a Hugging Face config must be a JSON object, found a {type(hf).__name__}; "
                              "re-download the model folder")
    return hf


def _load_eventllm(path: Path) -> CausalLM:
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file without eventllm metadata; pass the Hugging Face folder (with config.json) instead")
    arch = meta.get("arch")
    if arch not in ARCHS:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; eventllm knows {sorted(ARCHS)}")
    cls, cfg_cls = ARCHS[arch]
    try:
        cfg = cfg_cls(**json.loads(meta["config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: the config in the metadata is unreadable ({e})") from None
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    model = cls(cfg)
    quant = _quantization_meta(meta, path)
    tensors = model.complete_tensors({k: v.float() for k, v in _dequantized(tensors, path).items()})
    _fill(model, tensors, path, target=model.weights_module())
    if quant:
        _requantize(model, quant, meta.get("fingerprint"), path)
    return model


def load_checkpoint(path: str | Path) -> CausalLM:
    """Load a model from a Hugging Face folder, a BlinkDL `.pth`, or an eventllm `.safetensors` (or a folder holding one)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "config.json").exists():
            return _load_hf_folder(path)
        if (path / "model.safetensors").exists():
            return _load_eventllm(path / "model.safetensors")
        raise CheckpointError(f"{path}: a folder without config.json or model.safetensors; not a model folder")
    if path.suffix in (".pth", ".pt"):
        return _load_blinkdl(path)
    if path.suffix == ".safetensors":
        return _load_eventllm(path)
    raise CheckpointError(f"{path}: unknown model file type {path.suffix!r}; use a folder, .pth or .safetensors")


# --- integer weights -----------------------------------------------------------------------------------
# A quantised model (`eventllm.models.quantize`) is stored as it runs: each quantised weight as its integers Q (int8)
# under its own key and its per-output-channel scales under KEY + SCALE_SUFFIX, the precision in the metadata.
SCALE_SUFFIX = ".qscale"


def _quantization_meta(meta: dict, path: Path) -> dict | None:
    if "quantization" not in meta:
        return None
    try:
        q = json.loads(meta["quantization"])
        if not (isinstance(q, dict) and q["weight_bits"] in (8, 4) and q["event_bits"] in (16, 8)):
            raise ValueError(q)
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: the quantization in the metadata is unreadable; re-export the model") from None
    return q


def _dequantized(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors with every integer weight turned back into scale·Q (float)."""
    out = {}
    for k, v in tensors.items():
        if k.endswith(SCALE_SUFFIX):
            if k[: -len(SCALE_SUFFIX)] not in tensors:
                raise CheckpointError(f"{path}: scales {k!r} without their integer weights; the file is incomplete")
            continue
        scale = tensors.get(k + SCALE_SUFFIX)
        if v.dtype == torch.int8:
            if scale is None or scale.shape != v.shape[:1]:
                raise CheckpointError(f"{path}: integer weights {k!r} without one scale per row; the file is incomplete")
            v = v.float() * scale.float()[:, None]
        out[k] = v
    return out


def _requantize(model: CausalLM, quant: dict, fingerprint: str | None, path: Path) -> None:
    """Mark the model as the quantised one it was saved as (its weights are scale·Q already, so a round-to-nearest
    pass finds the same Q and scales again), with the fingerprint of its trained weights for its thresholds files."""
    from eventllm.models.quantize import quantize_model

    try:
        quantize_model(model, quant["weight_bits"], "rtn", quant.get("projections") or None, quant["event_bits"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    model.quantization["method"] = quant.get("method")
    if fingerprint:
        model._fingerprint = fingerprint


def _integer_tensors(model: CausalLM, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` with each quantised weight as the Q (int8) and scales (KEY + SCALE_SUFFIX) quantisation made."""
    ints = {w.data_ptr(): (q, scale) for w, q, scale in getattr(model, "_integer_weights", [])}
    out = {}
    for k, v in tensors.items():
        if v.data_ptr() in ints:
            out[k], out[k + SCALE_SUFFIX] = ints[v.data_ptr()]
        else:
            out[k] = v
    return out


# --- writing --------------------------------------------------------------------------------------------
def _weights(model: CausalLM) -> dict[str, torch.Tensor]:
    return model.state_dict_for_save()


def save_eventllm(model: CausalLM, path: str | Path, dtype: torch.dtype = torch.float32, extra: dict[str, str] | None = None) -> Path:
    """Write the model as one safetensors file (our format); `dtype` may be float16/bfloat16 for shipping."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": model.arch, "config": json.dumps(model.config_dict())}
    tensors = _weights(model)
    q = getattr(model, "quantization", None)
    if q and q["weight_bits"] < 16:  # stored as it runs: integers and their scales
        meta |= {"quantization": json.dumps({k: v for k, v in q.items() if k != "scales"}), "fingerprint": model.fingerprint()}
        tensors = _integer_tensors(model, tensors)
    meta.update(extra or {})
    with atomic_path(path) as tmp:  # a complete file or the previous one
        save_file({k: v.detach().to(v.dtype if v.dtype == torch.int8 or k.endswith(SCALE_SUFFIX) else dtype).contiguous()
                   for k, v in tensors.items()}, str(tmp), metadata=meta)
    return path


def save_hf(model: CausalLM, folder: str | Path) -> Path:
    """Write a Hugging Face folder (config.json + model.safetensors) that transformers loads."""
    folder = Path(folder)
    hf = model.to_hf()
    hf.save_pretrained(str(folder))
    return folder


def save_blinkdl(model: RWKV | RWKV7, path: str | Path) -> Path:
    """Write an RWKV-4 or RWKV-7 model as BlinkDL's `.pth` (time_mix / x_r … as [1, 1, C]), as the `rwkv` package
    expects (for RWKV-7: with RWKV_V7_ON=1)."""
    if not isinstance(model, (RWKV, RWKV7)):
        raise CheckpointError(f"BlinkDL .pth holds RWKV models only, not {model.arch}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, RWKV7):
        sd = model.blinkdl_tensors()
    else:
        sd = {k: (v.reshape(1, 1, -1) if "time_mix" in k else v).detach().clone() for k, v in model.state_dict().items()}
    torch.save(sd, str(path))
    return path
