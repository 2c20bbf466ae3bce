"""The rooms import one way, in data-flow order; the graph, the mapper and the simulator run without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Data-flow order (DESIGN.md §2): a room may import rooms before it, never one after it. Shared helpers
# (errors, config, data, tokenizer, report, atomic writes) sit below every room.
ORDER = ["eventllm.models", "eventllm.training", "eventllm.evaluate", "eventllm.sparsity", "eventllm.process",
         "mapping", "sim", "eventllm.masks", "eventllm.pipeline", "eventllm.distributed", "eventllm.generate", "eventllm.demo", "eventllm.cli"]
SHARED = ["eventllm.errors", "eventllm.config", "eventllm.data", "eventllm.tokenizer", "eventllm.report", "eventllm.atomic",
          "eventllm.io", "eventllm"]


def room_of(module: str) -> int | None:
    """Position of `module` in ORDER (None: a shared helper or a third-party module)."""
    best = None
    for i, room in enumerate(ORDER):
        if module == room or module.startswith(room + "."):
            best = i
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] in ("__init__", "__main__"):
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def violations() -> list[str]:
    bad = []
    for folder in ("eventllm", "mapping", "sim"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            mod = module_name(path)
            here = room_of(mod)
            if here is None:
                continue
            for line, target in imports_of(path):
                there = room_of(target)
                if there is not None and there > here:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {mod} ({ORDER[here]}) imports {target} ({ORDER[there]})")
    return sorted(set(bad))


def test_rooms_import_only_rooms_before_them():
    bad = violations()
    assert not bad, "imports against the data-flow order:\n" + "\n".join(bad)


# The rooms above the pipeline reach the mapper and the simulator only through it (eventllm/pipeline.py).
ABOVE_THE_DOOR = ("eventllm.distributed", "eventllm.generate", "eventllm.demo", "eventllm.cli")
BEHIND_THE_DOOR = ("mapping", "sim")


def door_violations(paths) -> list[str]:
    bad = []
    for path in paths:
        for line, target in imports_of(path):
            if target.split(".")[0] in BEHIND_THE_DOOR:
                bad.append(f"{path}:{line}: imports {target}; go through eventllm.pipeline")
    return bad


def rooms_above_the_door() -> list[Path]:
    return [p for p in sorted((ROOT / "eventllm").rglob("*.py"))
            if any(module_name(p) == r or module_name(p).startswith(r + ".") for r in ABOVE_THE_DOOR)]


def test_only_the_pipeline_opens_the_door_to_mapping_and_sim():
    paths = rooms_above_the_door()
    assert {module_name(p).split(".")[1] for p in paths} >= {"distributed", "generate", "demo", "cli"}
    bad = door_violations(paths)
    assert not bad, "\n".join(bad)


def test_the_door_check_sees_a_direct_import(tmp_path):
    f = tmp_path / "backend.py"
    f.write_text("def run():\n    from sim.engine import Simulator\n    from eventllm.pipeline import simulator\n")
    assert door_violations([f]) == [f"{f}:2: imports sim.engine; go through eventllm.pipeline",
                                    f"{f}:2: imports sim.engine.Simulator; go through eventllm.pipeline"]


def test_the_check_sees_a_backward_import(tmp_path):
    # the checker itself: a models module importing the simulator is flagged
    assert room_of("sim.engine") > room_of("eventllm.models.rwkv")
    assert room_of("eventllm.errors") is None and room_of("numpy") is None


@pytest.mark.parametrize("module", ["mapping", "sim", "eventllm.process", "eventllm"])
def test_import_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# The Lava bridge runs as its own small command (`python -m eventllm.process.lava.bridge`): its flags are its own.
OWN_COMMAND_LINE = {"eventllm/process/lava/bridge.py", "eventllm/process/lava/client.py"}


def library_error_flags() -> list[str]:
    """Every `--flag` written into an exception raised outside the CLI (file:line)."""
    import re

    found = []
    for top in ("eventllm", "mapping", "sim"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("eventllm/cli/") or rel in OWN_COMMAND_LINE:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    text = " ".join(c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant) and isinstance(c.value, str))
                    text = re.sub(r"`eventllm [^`]*`", "", text)  # a whole command suggested is fine
                    if re.search(r"(?<![\w`-])--[a-z]", text):
                        found.append(f"{rel}:{node.lineno}")
    return found


def test_library_errors_name_options_not_flags_and_the_cli_shows_the_flags():
    from eventllm.cli import build_parser, in_cli_words

    assert library_error_flags() == [], "name the option as `python_name`; the CLI shows it as its flag"
    p = build_parser()
    assert in_cli_words("give only one of `max_ppl_increase` and `target_sparsity`; `nothing` stays", p) == \
        "give only one of --max-ppl-increase and --target-sparsity; `nothing` stays"
