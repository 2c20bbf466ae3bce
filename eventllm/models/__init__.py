"""Torch language models with a threshold before every linear projection (RWKV-4, OPT)."""

from __future__ import annotations

from eventllm.errors import ConfigError
from eventllm.models.base import CausalLM
from eventllm.models.opt import OPT, OPTConfig
from eventllm.models.rwkv import RWKV, RWKVConfig

ARCHS = {"rwkv4": (RWKV, RWKVConfig), "opt": (OPT, OPTConfig)}


def build_model(arch: str, config: dict) -> CausalLM:
    """A freshly initialised model of architecture `arch` ("rwkv4" or "opt") with the given config fields."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    cls, cfg_cls = ARCHS[arch]
    try:
        cfg = cfg_cls(**config)
    except TypeError as e:
        raise ConfigError(f"bad {arch} config: {e}") from None
    return cls(cfg)


__all__ = ["ARCHS", "CausalLM", "OPT", "OPTConfig", "RWKV", "RWKVConfig", "build_model"]
