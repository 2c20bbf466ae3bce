"""Reading the files users give (TOML: training configs, topologies, cost tables; JSON: thresholds, graphs,
mappings, Hugging Face configs) with one kind of error each: the file named, the problem, the fix."""

from __future__ import annotations

import json
from pathlib import Path

from eventllm.errors import ConfigError, EventLLMError


def read_toml(path: str | Path, what: str, error: type[EventLLMError] = ConfigError, fix: str | None = None) -> dict:
    """The parsed content of a TOML file; a missing, folder, unreadable or malformed file raises `error` naming it
    and saying `fix` (default: pass the TOML file itself)."""
    import tomllib  # Python 3.11+; the graph package also runs in the Lava environment (3.10), which reads no TOML

    path = Path(path)
    fix = fix or f"pass the {what} (a .toml file)"
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}; {fix}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a {what}; {fix}") from None
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path} is not valid TOML ({e}); fix the file") from None
    except UnicodeDecodeError as e:
        raise error(f"{path} is not a text file ({e.reason}); {fix}") from None
    except OSError as e:
        raise error(f"cannot read {what} {path} ({e.strerror or e}); {fix}") from None


def read_json(path: str | Path, what: str, fix: str, error: type[EventLLMError] = ConfigError):
    """The parsed content of a JSON file; a missing, folder, unreadable or malformed file raises `error` naming it
    and saying `fix` (e.g. "re-run `eventllm map`")."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}; {fix}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a {what}; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e}); {fix}") from None
    except OSError as e:
        raise error(f"{path}: cannot be read as a {what} ({e.strerror or e}); {fix}") from None
