"""Run a saved process graph (or a part of it) on lava-nc's CPU simulator (Loihi2SimCfg).

lava-nc installs only on Python 3.10, so this module runs in the separate environment that `make setup`
builds (`.venv-lava`), without torch. Two commands:

    # a part (or all) of a graph over given inputs, recording out-ports and the events every out-port sent
    .venv-lava/bin/python -m eventllm.process.lava.bridge run GRAPH --prefix L0. --inputs in.npz \
        --probe L0.ffn.residual.out --output lava.npz
    .venv-lava/bin/python -m eventllm.process.lava.bridge run GRAPH --tokens 5,17,9 --output lava.npz

    # a token server for the Python 3.11 side (`eventllm.process.lava.client`): one JSON request per line on
    # stdin, one JSON answer per line on stdout
    .venv-lava/bin/python -m eventllm.process.lava.bridge serve GRAPH

Requests of `serve`: {"op": "step", "token": 5} → {"output": <base64 float64>, "seconds": …} (with
"sparsity": true also this token's mean zero share over the threshold sites, from the Lava counters);
{"op": "events"} → {"ports": {"L0.att.key.threshold.out": 1234, …}}; {"op": "reset"} (a fresh network, the
state back to its start); {"op": "info"}; {"op": "close"}. A failure answers {"error": "…"}.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time

import numpy as np

from eventllm.atomic import atomic_path
from eventllm.errors import GraphError, OutputError
from eventllm.process.graph import ProcessGraph


def encode(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def decode(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f8")


def _network(graph, prefix="", probes=(), blocks="hierarchical"):
    from eventllm.process.lava.network import LavaNetwork

    return LavaNetwork(graph, prefix=prefix, probes=list(probes), blocks=blocks)


def run(graph: ProcessGraph, prefix: str = "", inputs: dict[str, np.ndarray] | None = None, tokens: list[int] | None = None,
        probes: list[str] = (), blocks: str = "hierarchical") -> tuple[dict[str, np.ndarray], dict[str, int], "object"]:
    """Run the part of `graph` whose names start with `prefix` for every token: the read values [T, n] by
    out-port, the events each out-port sent, and the network (stopped)."""
    net = _network(graph, prefix, probes, blocks)
    n = len(tokens) if tokens is not None else len(next(iter((inputs or {}).values()), []))
    if n == 0:
        raise GraphError("nothing to run: pass --tokens or inputs with at least one row")
    out: dict[str, list] = {path: [] for path in net.reads}
    try:
        for t in range(n):
            ext = {path: values[t] for path, values in (inputs or {}).items()}
            got = net.step(tokens[t] if tokens is not None else None, ext)
            for path, v in got.items():
                out[path].append(v)
        events = net.port_events()
    finally:
        net.stop()
    return {path: np.stack(v) for path, v in out.items()}, events, net


def serve(graph_dir: str, blocks: str = "hierarchical", stdin=None, stdout=None) -> int:
    """Answer JSON requests line by line (see the module docstring) until "close" or the end of stdin."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    graph = ProcessGraph.load(graph_dir)
    net = _network(graph, blocks=blocks)

    def answer(obj) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    thresholds = {p.name for p in graph if p.kind == "threshold"}
    sizes = {f"{name}.out": graph[name].out_ports["out"].size for name in thresholds}
    before = dict.fromkeys(sizes, 0)
    answer({"ready": True, "hold": net.hold, "processes": len(net.sub), "output": graph.output, "blocks": net.mode})
    try:
        for line in stdin:
            try:
                req = json.loads(line)
                op = req.get("op")
                if op == "step":
                    t0 = time.perf_counter()
                    got = net.step(int(req["token"]))
                    reply = {"output": encode(got[graph.output]), "seconds": time.perf_counter() - t0}
                    if req.get("sparsity") and sizes:  # this token's zero share, mean over the threshold sites
                        now = net.port_events(only=thresholds)
                        reply["sparsity"] = float(np.mean([1 - (now[k] - before[k]) / n for k, n in sizes.items()]))
                        before = now
                    answer(reply)
                elif op == "events":
                    answer({"ports": net.port_events(), "tokens": net.tokens})
                elif op == "reset":
                    net.stop()
                    net = _network(graph, blocks=blocks)
                    before = dict.fromkeys(sizes, 0)
                    answer({"ok": True})
                elif op == "info":
                    answer({"hold": net.hold, "processes": len(net.sub), "tokens": net.tokens,
                            "blocks": net.mode, "pid": os.getpid()})
                elif op == "close":
                    answer({"ok": True})
                    break
                else:
                    answer({"error": f"unknown request {op!r}; use step, events, reset, info or close"})
            except (GraphError, KeyError, ValueError, TypeError) as e:
                answer({"error": f"{type(e).__name__}: {e}"})
    finally:
        net.stop()
    return 0


BLOCKS_HELP = ("hierarchical: a Lava process per process of the graph, a hierarchical process per layer; fused: a layer "
               "runs as one Lava process (fast); flat: every process at the top level (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eventllm.process.lava.bridge", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a graph (or the part with --prefix) over given tokens or inputs")
    r.add_argument("graph", help="graph folder (eventllm build)")
    r.add_argument("--prefix", default="", help="run the processes whose names start with this (default: all)")
    r.add_argument("--inputs", help=".npz: for each out-port feeding the part from outside, values [T, n]")
    r.add_argument("--tokens", help="comma-separated token ids (a part that holds the token input)")
    r.add_argument("--probe", action="append", default=[], help="out-port to record, e.g. L0.ffn.residual.out")
    r.add_argument("--blocks", default="hierarchical", choices=["hierarchical", "fused", "flat"], help=BLOCKS_HELP)
    r.add_argument("--output", required=True, help=".npz to write the recorded values and the events to")
    s = sub.add_parser("serve", help="answer step/events/reset requests (JSON lines) for the whole graph")
    s.add_argument("graph", help="graph folder (eventllm build)")
    s.add_argument("--blocks", default="hierarchical", choices=["hierarchical", "fused", "flat"], help=BLOCKS_HELP)
    args = ap.parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args.graph, blocks=args.blocks)
        graph = ProcessGraph.load(args.graph)
        inputs = dict(np.load(args.inputs)) if args.inputs else None
        try:
            tokens = [int(t) for t in args.tokens.split(",")] if args.tokens else None
        except ValueError:
            raise GraphError(f"--tokens must be comma-separated integers, got {args.tokens!r}") from None
        t0 = time.perf_counter()
        values, events, net = run(graph, args.prefix, inputs, tokens, args.probe, blocks=args.blocks)
        seconds = time.perf_counter() - t0
        paths = sorted(events)
        with atomic_path(args.output) as tmp, open(tmp, "wb") as f:  # an interrupted run keeps the old file
            np.savez(f, **values, **{"events:paths": np.array(paths), "events:counts": np.array([events[p] for p in paths])})
    except (GraphError, OutputError) as e:
        print(f"lava_bridge: error: {e}", file=sys.stderr)
        return 2
    n = len(next(iter(values.values())))
    print(f"lava_bridge: ran {args.prefix or 'the whole graph'} ({len(net.sub)} processes, {net.hold} steps per token) on "
          f"Loihi2SimCfg for {n} tokens in {seconds:.1f} s; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
