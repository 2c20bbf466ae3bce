"""Refusing sizes the machine cannot hold, before anything is allocated.

A model config or a topology read from a file can ask for any size; `check_memory` compares what it would
need with the memory this machine has free and refuses with both numbers. Standard library only.
"""

from __future__ import annotations

import os

from eventllm.errors import ConfigError, EventLLMError


def available_memory() -> int:
    """Bytes of memory free for a new allocation (MemAvailable on Linux, else the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_memory(needed: int, what: str, fix: str, error: type[EventLLMError] = ConfigError) -> None:
    """Raise `error` when `needed` bytes exceed the memory free now; the message says how much it would need."""
    free = available_memory()
    if needed > free:
        raise error(f"{what} would need {gib(needed)} of memory, this machine has {gib(free)} free; {fix}")
