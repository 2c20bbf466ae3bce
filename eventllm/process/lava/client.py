"""The Python 3.11 side of the Lava bridge: runs a graph on lava-nc in the `.venv-lava` interpreter, token by token.

lava-nc needs Python 3.10 and this package's main environment is 3.11 with torch, so the graph is saved to a
folder and `python -m eventllm.process.lava.bridge serve GRAPH` runs in the Lava environment; requests and
answers are JSON lines over its stdin/stdout (`eventllm.process.lava.bridge`). numpy only: no lava, no torch.

>>> with LavaClient(graph) as lava:                   # doctest: +SKIP
...     logits = lava.step(5)
...     lava.port_events()["L0.att.key.threshold.out"]
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from eventllm.errors import ConfigError, GraphError

ROOT = Path(__file__).resolve().parents[3]  # the folder holding the eventllm package


def lava_python() -> Path:
    """The Python 3.10 interpreter with lava-nc: $EVENTLLM_LAVA_PYTHON, else `make setup`'s .venv-lava."""
    env = os.environ.get("EVENTLLM_LAVA_PYTHON")
    path = Path(env) if env else ROOT / ".venv-lava" / "bin" / "python"
    if not path.exists():
        raise ConfigError(f"the Lava backend needs lava-nc in a Python 3.10 environment and {path} does not exist; run "
                          "`make setup` (it builds .venv-lava) or set EVENTLLM_LAVA_PYTHON to a Python with lava-nc 0.10")
    return path


class LavaClient:
    """A graph running on lava-nc in a child process (`bridge serve`). `graph` is a ProcessGraph or a saved
    graph folder; `blocks` is "hierarchical" (one Lava process per process, a hierarchical process per layer)
    or "fused" (one Lava process per layer)."""

    def __init__(self, graph, blocks: str = "hierarchical", timeout: float | None = None):
        if blocks not in ("hierarchical", "fused"):
            raise ConfigError(f"unknown Lava block mode {blocks!r}; use hierarchical or fused")
        python = lava_python()
        self._tmp = None
        if isinstance(graph, (str, Path)):
            folder = Path(graph)
        else:
            self._tmp = tempfile.mkdtemp(prefix="eventllm-lava-")
            folder = graph.save(Path(self._tmp) / "graph")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "PYTHONWARNINGS": "ignore"}
        cmd = [str(python), "-m", "eventllm.process.lava.bridge", "serve", str(folder), "--blocks", blocks]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=tempfile.gettempdir())
        self.info = self._answer("starting lava-nc")
        self.hold = self.info["hold"]
        self.output = self.info["output"]
        self.tokens = 0

    def _answer(self, what: str) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            err = self.proc.stderr.read()
            self.close()
            last = [ln for ln in err.strip().splitlines() if ln.strip()]
            raise GraphError(f"the Lava process ended while {what}: {last[-1] if last else 'no message'}")
        obj = json.loads(line)
        if "error" in obj:
            raise GraphError(f"lava-nc: {obj['error']}")
        return obj

    def _ask(self, req: dict, what: str) -> dict:
        if self.proc.poll() is not None:
            raise GraphError("the Lava process is not running (closed or ended)")
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._answer(what)

    def step(self, token: int) -> np.ndarray:
        """Run one token on Lava; the graph's output (the logits), float64."""
        return self.step_with_sparsity(token, False)[0]

    def step_with_sparsity(self, token: int, sparsity: bool = True) -> tuple[np.ndarray, float | None]:
        """Run one token; the output and this token's mean zero share over the threshold sites (Lava's counts)."""
        got = self._ask({"op": "step", "token": int(token), "sparsity": sparsity}, f"running token {self.tokens + 1}")
        self.tokens += 1
        return np.frombuffer(base64.b64decode(got["output"]), dtype="<f8").copy(), got.get("sparsity")

    def port_events(self) -> dict[str, int]:
        """Events each out-port sent over the tokens run so far, counted by the Lava processes."""
        return {k: int(v) for k, v in self._ask({"op": "events"}, "reading the event counters")["ports"].items()}

    def reset(self) -> None:
        """A fresh network: the state (and the counters) back to the start."""
        self._ask({"op": "reset"}, "resetting")
        self.tokens = 0

    def close(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
