"""Where a model runs: a `--device` name as a `torch.device`, refused in one line when torch does not know
the name or the device is not on this machine (torch itself raises a RuntimeError or an AssertionError)."""

from __future__ import annotations

import torch

from eventllm.errors import ConfigError


def torch_device(device: str | None) -> torch.device:
    """`device` ("cpu", "cuda", "cuda:1", …), or CUDA when there is one (else the CPU) for None."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"`device` {device!r} is not a device; use cuda, cuda:N or cpu") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"`device` {device}: no CUDA device here; use `device` cpu (slow) or run on a GPU machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"`device` {device}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0 … "
                          f"cuda:{torch.cuda.device_count() - 1}")
    return dev
