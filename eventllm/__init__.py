"""eventllm: activation-sparse LLMs on event-driven (neuromorphic) hardware.

Data flow: `eventllm.models` (torch RWKV-4 / OPT) -> `eventllm.sparsity` (thresholds, statistics)
-> `eventllm.process` (event-driven process graph) -> `mapping` (cores) -> `sim` (energy, latency).

Importing `eventllm` itself is light: torch is imported only by the modules that need it.
"""

from eventllm.errors import EventLLMError

__version__ = "0.1.0"
__all__ = ["EventLLMError", "__version__"]
