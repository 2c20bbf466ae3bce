"""Resolving a model name (`zoo:NAME` or a path) into a model and its tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eventllm.errors import CheckpointError
from eventllm.models.base import CausalLM
from eventllm.models.checkpoints import load_checkpoint
from eventllm.tokenizer import Tokenizer, load_tokenizer

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
from eventllm import DEFAULT_MODEL  # noqa: E402  (one name, importable without torch)


@dataclass
class LoadedModel:
    name: str
    model: CausalLM
    tokenizer: Tokenizer
    card: dict | None = None


def zoo_names() -> list[str]:
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "model.safetensors").exists()) if ZOO_DIR.exists() else []


def zoo_card(name: str) -> dict | None:
    path = ZOO_DIR / name / "card.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_model(spec: str = DEFAULT_MODEL) -> LoadedModel:
    """Load `zoo:NAME`, a Hugging Face folder, a BlinkDL .pth or an eventllm .safetensors, with its tokenizer."""
    if spec.startswith("zoo:"):
        name = spec[4:]
        if name not in zoo_names():
            raise CheckpointError(f"unknown zoo model {spec!r}; available: {', '.join('zoo:' + n for n in zoo_names()) or 'none'}")
        model = load_checkpoint(ZOO_DIR / name / "model.safetensors")
        # a zoo model's own tokenizer.json, else the one the first zoo models share
        folder = ZOO_DIR / name if (ZOO_DIR / name / "tokenizer.json").exists() else ZOO_DIR
        return LoadedModel(spec, model, load_tokenizer(folder, model.config.vocab_size), zoo_card(name))
    model = load_checkpoint(spec)
    return LoadedModel(spec, model, load_tokenizer(spec, model.config.vocab_size))
