"""eventllm: activation-sparse LLMs on event-driven (neuromorphic) hardware.

Data flow: `eventllm.models` (torch RWKV-4 / OPT) -> `eventllm.sparsity` (thresholds, statistics)
-> `eventllm.process` (event-driven process graph) -> `mapping` (cores) -> `sim` (energy, latency).

Importing `eventllm` itself is light: torch is imported only by the modules that need it.
"""

from eventllm.errors import EventLLMError

__version__ = "0.1.0"
DEFAULT_MODEL = "zoo:rwkv4-small"  # the shipped default model of every command (eventllm/zoo/rwkv4-small/card.md)
__all__ = ["DEFAULT_MODEL", "EventLLMError", "__version__"]
