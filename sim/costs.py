"""Cost tables as data (Accelergy style): energy and cycles per action, one TOML file per hardware preset.

`load_costs("seneca")` reads `sim/presets/seneca.toml`; a path reads a user's own file with the same keys.

An optional top-level `messages` says how the NoC traffic is counted: "per_shard" (the default: an event makes one
packet per destination shard on another core; shards on the sender's core get it for free) or "per_core" (SANA-FE's
rule: one message per destination core, the sender's own core too, each charged `packet`; `simulate --backend sanafe`
shows both counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from eventllm.config import read_toml
from eventllm.errors import ConfigError

PRESETS = Path(__file__).parent / "presets"

MESSAGES = ("per_shard", "per_core")
ENERGY_KEYS = ("synop", "synop_int8", "weight_read", "weight_unpack", "param_read", "state_read", "state_write",
               "neuron_op", "neuron_update", "event_in", "event_out", "packet", "noc_hop", "chip_link", "static_power_w")
TIME_KEYS = ("synop", "synop_int8", "weight_unpack", "neuron_op", "event_in", "event_out", "packet", "hop", "chip_link")


@dataclass
class CostModel:
    name: str
    topology: str
    energy: dict[str, float]  # joules per action (static_power_w: watts per used core)
    cycles: dict[str, float]  # cycles per action
    source: str = ""
    messages: str = "per_shard"  # how NoC traffic is counted (MESSAGES)


def load_costs(spec: str) -> CostModel:
    path = Path(spec)
    if path.suffix != ".toml":
        path = PRESETS / f"{spec}.toml"
        if not path.exists():
            names = ", ".join(sorted(p.stem for p in PRESETS.glob("*.toml")))
            raise ConfigError(f"unknown cost preset {spec!r}; use one of {names} or a .toml file")
    data = read_toml(path, "cost file")
    unknown = set(data) - {"name", "topology", "messages", "energy_j", "time_cycles"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: name, topology, messages, [energy_j], [time_cycles]")
    if data.get("messages", MESSAGES[0]) not in MESSAGES:
        raise ConfigError(f"{path}: messages = {data['messages']!r}; use one of {', '.join(MESSAGES)}")
    for key in ("name", "topology"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: {key} must be a string, got {data[key]!r}")
    energy, cycles = data.get("energy_j", {}), data.get("time_cycles", {})
    for table, label in ((energy, "energy_j"), (cycles, "time_cycles")):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {label} must be a table [{label}] of numbers, got {table!r}")
    for table, keys, label in ((energy, ENERGY_KEYS, "energy_j"), (cycles, TIME_KEYS, "time_cycles")):
        missing, extra = set(keys) - set(table), set(table) - set(keys)
        if missing or extra:
            raise ConfigError(f"{path}: [{label}] " + (f"misses {', '.join(sorted(missing))}" if missing else "")
                              + ("; " if missing and extra else "") + (f"has unknown {', '.join(sorted(extra))}" if extra else ""))
        for k, v in table.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{path}: [{label}] {k} = {v!r} must be a non-negative number")
    return CostModel(data.get("name", path.stem), data.get("topology", data.get("name", path.stem)),
                     {k: float(energy[k]) for k in ENERGY_KEYS}, {k: float(cycles[k]) for k in TIME_KEYS}, str(path),
                     data.get("messages", MESSAGES[0]))


def topology_note(costs: CostModel, topology: str) -> str:
    """A line saying that `costs` were made for another topology than the mapping's (a what-if a user may want,
    but not to make unawares: the events of a `topology` mapping priced at another chip's costs); "" if they match."""
    if costs.topology == topology:
        return ""
    return (f"note: cost table {costs.name!r} is for topology {costs.topology!r}, the mapping is onto {topology!r}: its events "
            f"are priced at {costs.name}'s costs (to price {topology!r} as itself, pass its own cost table to `costs`)")
