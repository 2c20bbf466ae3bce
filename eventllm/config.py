"""Reading the TOML files users write (training configs, topologies, cost tables) with one kind of error."""

from __future__ import annotations

import tomllib
from pathlib import Path

from eventllm.errors import ConfigError, EventLLMError


def read_toml(path: str | Path, what: str, error: type[EventLLMError] = ConfigError) -> dict:
    """The parsed content of a TOML file; a missing, unreadable or malformed file raises `error` naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path} is not valid TOML ({e}); fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {what} {path} ({e})") from None
