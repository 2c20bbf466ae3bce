"""Thresholds files: one θ per projection per layer, tied to the model they were made for.

    {"format": "eventllm-thresholds", "version": 1,
     "model": {"name": "zoo:rwkv4-tiny", "arch": "rwkv4", "fingerprint": "…", "n_layer": 6},
     "projections": ["att.key", …],
     "thresholds": [{"att.key": 0.12, …}, …],        one object per layer
     "head": 0.3,                                     optional: θ before the output head (`calibrate --head`);
                                                      a file that has it turns that site on wherever it is applied
     "scores": "wina",                                optional: per-neuron thresholds θ_i = θ / g_i (θ bounds the
                                                      score |x_i|·g_i): "wina" g_i = ‖W[:, i]‖ (from the weights),
                                                      "gradient" g measured on data (then "channel_scales");
                                                      absent: one θ per site
     "channel_scales": [{"att.key": [g_0, …], …}, …], with "scores": "gradient" only: g of every site, one object
                                                      per layer as "thresholds" (the head's, if any, under "head")
     "meta": {…}}                                     how they were made (free form)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from eventllm.atomic import write_text
from eventllm.config import read_json
from eventllm.errors import ConfigError, ThresholdError
from eventllm.models.base import CausalLM

FORMAT = "eventllm-thresholds"
VERSION = 1


def thresholds_to_json(model: CausalLM, model_name: str, meta: dict | None = None) -> dict:
    """The model's current θ values as a thresholds document."""
    thetas = model.get_thetas()
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": model_name, "arch": model.arch, "fingerprint": model.fingerprint(), "n_layer": model.n_layer},
        "projections": list(model.PROJECTIONS),
        "thresholds": [{p: thetas[(i, p)] for p in model.PROJECTIONS if (i, p) in thetas} for i in range(model.n_layer)],
    }
    if model.head_threshold:
        doc["head"] = thetas[(model.n_layer, model.HEAD_SITE)]
    if model.scores == "graph":
        raise ThresholdError("this model's per-neuron bounds were taken from a process graph; save the thresholds file of "
                             "the model it was built from")
    if model.scores != "magnitude":
        doc["scores"] = model.scores
    if model.scores == "gradient":
        scales = {k: _short_floats(g) for k, g in model.channel_scales().items()}
        doc["channel_scales"] = [{p: scales[(i, p)] for p in model.PROJECTIONS if (i, p) in scales} for i in range(model.n_layer)]
        if model.head_threshold:
            doc["channel_scales"].append({model.HEAD_SITE: scales[(model.n_layer, model.HEAD_SITE)]})
    return doc | {"meta": meta or {}}


def _short_floats(g) -> list[float]:
    """A float32 vector as the shortest decimals that read back as the same float32 values (g is exact in the file)."""
    return [float(str(v)) for v in np.asarray(g.detach().cpu(), dtype=np.float32)]


def save_thresholds(model: CausalLM, path: str | Path, model_name: str, meta: dict | None = None) -> Path:
    """Write the thresholds file at once (an interrupted write leaves the previous file as it was)."""
    doc = thresholds_to_json(model, model_name, meta)
    scales = doc.pop("channel_scales", None)
    text = json.dumps(doc, indent=2)
    if scales is not None:  # one line per site (not per number): g is data, not for reading
        layers = ",\n".join("    {" + ", ".join(f'"{p}": {json.dumps(g)}' for p, g in layer.items()) + "}" for layer in scales)
        text = text[: text.rindex("\n}")] + ',\n  "channel_scales": [\n' + layers + "\n  ]\n}"
    return write_text(path, text + "\n")


_KEYS = {"format", "version", "model", "projections", "thresholds", "head", "scores", "channel_scales", "meta"}


def read_thresholds(path: str | Path) -> dict:
    """Parse and check a thresholds file on its own (without a model)."""
    path = Path(path)
    doc = read_json(path, "thresholds file", "pass the JSON file `eventllm calibrate` wrote", ThresholdError)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ThresholdError(f"{path}: not an eventllm thresholds file (missing \"format\": \"{FORMAT}\"); pass the JSON file "
                             "`eventllm calibrate` wrote")
    if doc.get("version") != VERSION:
        raise ThresholdError(f"{path}: thresholds format version {doc.get('version')!r}, this eventllm reads version {VERSION}; "
                             "recalibrate with this eventllm (`eventllm calibrate`)")
    for key in ("model", "projections", "thresholds"):
        if key not in doc:
            raise ThresholdError(f"{path}: missing key {key!r}; regenerate the file with `eventllm calibrate`")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ThresholdError(f"{path}: unknown key {unknown[0]!r}; a thresholds file has {', '.join(sorted(_KEYS))} (put notes in \"meta\")")
    if not isinstance(doc["model"], dict):
        raise ThresholdError(f"{path}: \"model\" must be an object {{\"name\", \"arch\", \"fingerprint\", \"n_layer\"}}, "
                             f"got {doc['model']!r}; regenerate the file with `eventllm calibrate`")
    if not isinstance(doc["projections"], list) or not all(isinstance(p, str) for p in doc["projections"]):
        raise ThresholdError(f"{path}: \"projections\" must be a list of projection names")
    if not isinstance(doc.get("meta", {}), dict):
        raise ThresholdError(f"{path}: \"meta\" must be an object")
    if not isinstance(doc["thresholds"], list):
        raise ThresholdError(f"{path}: \"thresholds\" must be a list with one object per layer")
    if "scores" in doc and doc["scores"] not in CausalLM.SCORES:
        raise ThresholdError(f"{path}: scores must be one of {', '.join(CausalLM.SCORES)}, got {doc['scores']!r}")
    if "head" in doc:
        _check_theta(path, "head", doc["head"])
    for i, layer in enumerate(doc["thresholds"]):
        if not isinstance(layer, dict):
            raise ThresholdError(f"{path}: layer {i} of \"thresholds\" is not an object")
        for proj, value in layer.items():
            _check_theta(path, f"layer {i} {proj}", value)
    if ("channel_scales" in doc) != (doc.get("scores") == "gradient"):
        raise ThresholdError(f"{path}: \"channel_scales\" go with \"scores\": \"gradient\" (and it needs them); recalibrate "
                             "with `scores` gradient, or drop the key")
    if "channel_scales" in doc:
        scales = doc["channel_scales"]
        if not isinstance(scales, list) or not all(isinstance(layer, dict) for layer in scales):
            raise ThresholdError(f"{path}: \"channel_scales\" must be a list with one object per layer; recalibrate")
        want = len(doc["thresholds"]) + ("head" in doc)
        if len(scales) != want:
            raise ThresholdError(f"{path}: \"channel_scales\" has {len(scales)} objects, \"thresholds\" {len(doc['thresholds'])} layers"
                                 + (" and a head" if "head" in doc else "") + f" (so {want}); recalibrate with `scores` gradient")
        for i, layer in enumerate(scales):
            for proj, g in layer.items():
                if (not isinstance(g, list) or not g
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in g)):
                    raise ThresholdError(f"{path}: channel_scales layer {i} {proj}: must be a list of finite numbers > 0; "
                                         "recalibrate with `scores` gradient")
    return doc


def _check_theta(path: Path, where: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ThresholdError(f"{path}: {where}: θ must be a finite number ≥ 0, got {value!r}; fix the value or recalibrate")


def apply_thresholds(model: CausalLM, path: str | Path, allow_partial: bool = False) -> dict:
    """Load a thresholds file into `model` after checking it was made for this very model.

    Every site (layer, projection) of the model needs a θ; a missing one is an error unless `allow_partial`,
    when it runs at θ = 0. Returns the document, with "missing": the sites left at θ = 0 (empty for a complete file).
    """
    doc = read_thresholds(path)
    meta = doc["model"]
    if meta.get("arch") != model.arch:
        raise ThresholdError(f"{path}: made for a {meta.get('arch')!r} model, this model is {model.arch!r}")
    if meta.get("fingerprint") != model.fingerprint():
        raise ThresholdError(
            f"{path}: made for model {meta.get('name')!r} (fingerprint {meta.get('fingerprint')}), which is not this model "
            f"(fingerprint {model.fingerprint()}); calibrate thresholds for this model"
        )
    if len(doc["thresholds"]) > model.n_layer:
        raise ThresholdError(f"{path}: has θ for {len(doc['thresholds'])} layers, the model has {model.n_layer} "
                             f"(layers 0..{model.n_layer - 1}); calibrate thresholds for this model")
    thetas = {}
    sites = [k for k in model.get_thetas() if k[1] != model.HEAD_SITE]
    for i, layer in enumerate(doc["thresholds"]):
        for proj, value in layer.items():
            if proj not in model.PROJECTIONS:
                raise ThresholdError(f"{path}: layer {i}: unknown projection {proj!r}; {model.arch} has {', '.join(model.PROJECTIONS)}")
            if (i, proj) not in sites:
                raise ThresholdError(f"{path}: layer {i} has no {proj} site in {model.arch}; remove it from the file or recalibrate")
            thetas[(i, proj)] = float(value)
    missing = [k for k in sites if k not in thetas]
    if missing and not allow_partial:
        sites = ", ".join(f"layer {i} {p}" for i, p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ThresholdError(f"{path}: no θ for {sites}; recalibrate, or pass `allow_partial` to run those sites at θ = 0")
    model.set_head_threshold("head" in doc)
    if doc.get("scores") == "gradient":
        scales = {(model.n_layer if proj == model.HEAD_SITE else i, proj): g
                  for i, layer in enumerate(doc["channel_scales"]) for proj, g in layer.items()}
        for s in model.threshold_sites():  # a site a partial file leaves at θ = 0: its g changes nothing
            if (s.layer, s.projection) in missing:
                scales.setdefault((s.layer, s.projection), [1.0] * model.site_linears(s)[0].in_features)
        try:
            model.set_scores("gradient", scales)
        except ConfigError as e:
            raise ThresholdError(f"{path}: {e}") from None
    else:
        model.set_scores(doc.get("scores", "magnitude"))
    if "head" in doc:
        thetas[(model.n_layer, model.HEAD_SITE)] = float(doc["head"])
    model.set_thetas(0.0)
    model.set_thetas(thetas)
    return doc | {"missing": missing}


def describe_missing(missing: list[tuple[int, str]]) -> str:
    """One line naming the sites a partial thresholds file leaves at θ = 0."""
    return f"θ = 0 (no threshold in the file) at {len(missing)} site(s): " + ", ".join(f"layer {i} {p}" for i, p in missing)
