"""Thresholds files: one θ per projection per layer, tied to the model they were made for.

    {"format": "eventllm-thresholds", "version": 1,
     "model": {"name": "zoo:rwkv4-tiny", "arch": "rwkv4", "fingerprint": "…", "n_layer": 6},
     "projections": ["att.key", …],
     "thresholds": [{"att.key": 0.12, …}, …],        one object per layer
     "meta": {…}}                                     how they were made (free form)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from eventllm.errors import ThresholdError
from eventllm.models.base import CausalLM

FORMAT = "eventllm-thresholds"
VERSION = 1


def thresholds_to_json(model: CausalLM, model_name: str, meta: dict | None = None) -> dict:
    """The model's current θ values as a thresholds document."""
    thetas = model.get_thetas()
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": model_name, "arch": model.arch, "fingerprint": model.fingerprint(), "n_layer": model.n_layer},
        "projections": list(model.PROJECTIONS),
        "thresholds": [{p: thetas[(i, p)] for p in model.PROJECTIONS} for i in range(model.n_layer)],
        "meta": meta or {},
    }


def save_thresholds(model: CausalLM, path: str | Path, model_name: str, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(thresholds_to_json(model, model_name, meta), indent=2) + "\n")
    return path


def read_thresholds(path: str | Path) -> dict:
    """Parse and check a thresholds file on its own (without a model)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ThresholdError(f"{path}: no such thresholds file") from None
    except json.JSONDecodeError as e:
        raise ThresholdError(f"{path}: not valid JSON ({e}); regenerate it with `eventllm calibrate`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ThresholdError(f"{path}: not an eventllm thresholds file (missing \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ThresholdError(f"{path}: thresholds format version {doc.get('version')!r}, this eventllm reads version {VERSION}")
    for key in ("model", "projections", "thresholds"):
        if key not in doc:
            raise ThresholdError(f"{path}: missing key {key!r}")
    if not isinstance(doc["thresholds"], list):
        raise ThresholdError(f"{path}: \"thresholds\" must be a list with one object per layer")
    for i, layer in enumerate(doc["thresholds"]):
        if not isinstance(layer, dict):
            raise ThresholdError(f"{path}: layer {i} of \"thresholds\" is not an object")
        for proj, value in layer.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ThresholdError(f"{path}: layer {i} {proj}: θ must be a finite number ≥ 0, got {value!r}")
    return doc


def apply_thresholds(model: CausalLM, path: str | Path) -> dict:
    """Load a thresholds file into `model` after checking it was made for this very model; returns the document."""
    doc = read_thresholds(path)
    meta = doc["model"]
    if meta.get("arch") != model.arch:
        raise ThresholdError(f"{path}: made for a {meta.get('arch')!r} model, this model is {model.arch!r}")
    if meta.get("fingerprint") != model.fingerprint():
        raise ThresholdError(
            f"{path}: made for model {meta.get('name')!r} (fingerprint {meta.get('fingerprint')}), which is not this model "
            f"(fingerprint {model.fingerprint()}); calibrate thresholds for this model"
        )
    if len(doc["thresholds"]) != model.n_layer:
        raise ThresholdError(f"{path}: has {len(doc['thresholds'])} layers, the model has {model.n_layer}")
    thetas = {}
    for i, layer in enumerate(doc["thresholds"]):
        for proj, value in layer.items():
            if proj not in model.PROJECTIONS:
                raise ThresholdError(f"{path}: layer {i}: unknown projection {proj!r}; {model.arch} has {', '.join(model.PROJECTIONS)}")
            thetas[(i, proj)] = float(value)
    model.set_thetas(0.0)
    model.set_thetas(thetas)
    return doc
