"""Torch language models with a threshold before every linear projection (RWKV-4, RWKV-7, OPT)."""

from __future__ import annotations

from eventllm.errors import ConfigError
from eventllm.models.base import CausalLM
from eventllm.models.opt import OPT, OPTConfig
from eventllm.models.rwkv import RWKV, RWKVConfig
from eventllm.models.rwkv7 import RWKV7, RWKV7Config

ARCHS = {"rwkv4": (RWKV, RWKVConfig), "rwkv7": (RWKV7, RWKV7Config), "opt": (OPT, OPTConfig)}


def build_model(arch: str, config: dict) -> CausalLM:
    """A freshly initialised model of architecture `arch` (a key of ARCHS) with the given config fields."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    cls, cfg_cls = ARCHS[arch]
    try:
        cfg = cfg_cls(**config)
    except TypeError as e:
        raise ConfigError(f"bad {arch} config: {e}") from None
    return cls(cfg)


__all__ = ["ARCHS", "CausalLM", "OPT", "OPTConfig", "RWKV", "RWKV7", "RWKV7Config", "RWKVConfig", "build_model"]
