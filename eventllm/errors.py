"""The exceptions eventllm raises on bad input.

Every error a user can cause is an `EventLLMError`; its message names the bad value and the fix, and the
CLI prints it as one line with a non-zero exit code. A message names an option by its Python name in backticks
(`max_ppl_increase`), as a caller of the library passes it; the CLI shows that name as its flag
(--max-ppl-increase), so the library speaks of no command line.
"""


class EventLLMError(Exception):
    """Base class of every error eventllm raises on bad input."""


class CheckpointError(EventLLMError):
    """A model file or folder cannot be read: corrupt, missing key, wrong shape, unknown architecture."""


class ThresholdError(EventLLMError):
    """A thresholds file is malformed or was made for another model."""


class DataError(EventLLMError):
    """Text or task data is missing, empty or malformed."""


class ConfigError(EventLLMError):
    """A configuration value (CLI option, config file) is invalid."""


class GraphError(EventLLMError):
    """A process graph is malformed: ports of different shapes, an unconnected input, a bad graph folder."""


class MappingError(EventLLMError):
    """A topology is invalid or too small for the graph, or a mapping file does not fit its graph."""


class OutputError(EventLLMError):
    """An output file or folder cannot be written: no permission, no space, a file where a folder should be."""
