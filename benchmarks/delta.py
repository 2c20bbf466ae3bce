"""What delta events (sigma-delta) buy on text: perplexity, events, energy and latency, measured side by side.

    python benchmarks/delta.py [--model zoo:rwkv4-small] [--thresholds F] [--bits 16|8] [--deltas none,0,0.05,0.1]
                               [--theta-scales 1,1.15,1.3] [--tokens 4096] [--jobs N] [-o DIR]
    python benchmarks/delta.py --small -o DIR      (zoo:rwkv4-tiny, a few tokens, one θ_Δ and one θ scale; seconds)

Every configuration is the process graph of the model (its calibrated θ times a scale; w16a16, or w8a8 with
`--bits 8`), with delta events of threshold θ_Δ at every site or without them ("none"), mapped onto SENECA and
run by the message-passing simulator over the same --tokens of pg-books test, from a fresh state. Perplexity
comes from the simulator's own logits (delta events have no torch counterpart: the graph is the model), against
the natural graph (θ = 0, no delta) on the same tokens; energy and latency per token against the dense 16-bit
model (θ = 0, every entry processed, no delta; `ProcessGraph.plain`), simulated on the first 256 tokens.
The θ-scale points without delta events are the comparison: the same perplexity bought by a higher θ instead.
Writes delta.json into -o. With --jobs 1 the configurations run one after the other in this process.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a spawned worker runs this file by path: find _common
import _common  # noqa: E402,F401  (puts the repository on the path)
import numpy as np  # noqa: E402

from eventllm.atomic import write_text  # noqa: E402
from eventllm.report import format_table, pct  # noqa: E402

ARGS = None  # the worker processes' copy of the command line
DENSE_TOKENS = 256  # tokens the dense baseline is simulated on
# --small: zoo:rwkv4-tiny over a few tokens of the small data folder: dense, natural, θ_Δ none and 0.05, θ × 1.3, in
# this process
SMALL = {"output": _common.OUTPUT, "model": _common.SMALL_MODEL, "deltas": "none,0.05", "theta_scales": "1.3",
         "data": _common.small_data, "tokens": 4, "jobs": 1}


@functools.lru_cache(maxsize=1)
def _loaded(model: str, thresholds: str, bits: int):
    """The model at `bits` with its thresholds file, loaded once per process."""
    from eventllm import pipeline

    precision = {"weight_bits": 8, "event_bits": 8, "method": "mse"} if bits == 8 else None
    return pipeline.load(model, thresholds, precision=precision)


def _graph(scale: float):
    import copy

    from eventllm import pipeline

    loaded = _loaded(ARGS.model, ARGS.thresholds, ARGS.bits)
    m = copy.deepcopy(loaded.model).eval()
    m.set_thetas({k: v * scale for k, v in m.get_thetas().items()})
    return pipeline.build(m, loaded.name)


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(targets)), targets]))


def run_point(point: tuple[float, float | None, str], tokens: list[int]) -> dict:
    """Simulate one configuration (θ scale, θ_Δ or None, mode) over `tokens`; its figures."""
    from mapping import map_graph
    from sim.costs import load_costs
    from sim.engine import Simulator
    from sim.report import MODE_OVERRIDES, public, summarize

    scale, delta, mode = point
    graph = _graph(scale)
    if mode == "dense":
        graph, tokens = graph.plain(), tokens[:DENSE_TOKENS]
    elif delta is not None:
        graph = graph.with_delta_events(delta)
    mapping = map_graph(graph, "seneca")
    sim = Simulator(graph, mapping, load_costs("seneca"), event_driven=mode != "dense",
                    overrides=MODE_OVERRIDES if mode == "dense" else None)
    t0 = time.perf_counter()
    logits = sim.run(tokens)
    s = public(summarize(sim))
    sites = sum(v for k, v in sim.port_events().items() if k.endswith(".threshold.out")) / len(tokens)
    return {"theta_scale": scale, "theta_delta": delta, "mode": mode, "tokens": len(tokens),
            "nll": _nll(logits[:-1], np.array(tokens[1:])), "energy_j": s["energy_per_token_j"],
            "latency_s": s["latency_per_token_s"], "cores": mapping.cores_used, "synops": s["synaptic_ops_per_token"],
            "site_events": sites, "state_j": s["energy_breakdown_j"]["state memory"], "seconds": time.perf_counter() - t0}


def _init(args) -> None:
    global ARGS
    ARGS = args


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--model", default="zoo:rwkv4-small")
    ap.add_argument("--thresholds", help="thresholds file (default: the zoo model's shipped file)")
    ap.add_argument("--bits", type=int, default=16, choices=[16, 8], help="16: w16a16; 8: int8 weights and int8 events")
    ap.add_argument("--deltas", default="none,0,0.02,0.05,0.1,0.2", help="θ_Δ values ('none': no delta events)")
    ap.add_argument("--theta-scales", default="1.15,1.3,1.5", help="θ scales of the comparison points without delta events")
    ap.add_argument("--data", default=str(_common.ROOT.parent / "shared" / "data" / "pg-books"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--jobs", type=int, default=max(1, min(8, (os.cpu_count() or 1) - 1)))
    ap.add_argument("-o", "--output", default="out/delta")
    args = _common.parse_args(ap, argv, SMALL)
    if args.tokens < 2 or args.jobs < 1:
        ap.error("--tokens must be at least 2 (a perplexity needs a next token) and --jobs at least 1")
    from eventllm.data import cached_token_stream
    from eventllm.models.registry import load_model
    from eventllm.pipeline import shipped_thresholds

    args.thresholds = args.thresholds or shipped_thresholds(args.model)
    if args.thresholds is None:
        ap.error(f"{args.model} ships no thresholds file: give one with --thresholds")
    args.thresholds = str(args.thresholds)
    tokens = cached_token_stream(args.data, args.split, load_model(args.model).tokenizer)[: args.tokens].astype("int64").tolist()
    deltas = [None if d == "none" else float(d) for d in args.deltas.split(",")]
    points = [(0.0, None, "dense"), (0.0, None, "natural")] + [(1.0, d, "thresholded") for d in deltas]
    points += [(float(s), None, "thresholded") for s in args.theta_scales.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {len(points)} configurations × {len(tokens):,} tokens of "
          f"{args.data} [{args.split}], {args.jobs} jobs", flush=True)
    t0 = time.perf_counter()
    _init(args)
    if args.jobs == 1:
        results = [run_point(p, tokens) for p in points]
    else:  # spawned workers: a fork after torch started its thread pool can hang the child
        with ProcessPoolExecutor(args.jobs, multiprocessing.get_context("spawn"), initializer=_init, initargs=(args,)) as pool:
            results = list(pool.map(run_point, points, [tokens] * len(points)))
    _loaded.cache_clear()  # main may be called again in this process (the test suite): no model kept beyond the run
    seconds = time.perf_counter() - t0
    dense = results[0]
    natural = results[1]
    rows = []
    for r in results[1:]:
        r["ppl"] = float(np.exp(r["nll"]))
        r["ppl_increase"] = float(np.exp(r["nll"] - natural["nll"]) - 1)
        r["energy_ratio"] = dense["energy_j"] / r["energy_j"]
        r["latency_ratio"] = dense["latency_s"] / r["latency_s"]
        label = "natural (θ = 0)" if r["mode"] == "natural" else f"θ×{r['theta_scale']:g}"
        rows.append([label, "-" if r["theta_delta"] is None else f"{r['theta_delta']:g}", f"{r['ppl']:.3f}",
                     f"{100 * r['ppl_increase']:+.2f}%", f"{r['site_events']:,.0f}", pct(1 - r["synops"] / dense["synops"]),
                     f"{r['energy_j'] * 1e6:.2f}", f"{r['energy_ratio']:.2f}x", f"{r['state_j'] * 1e6:.2f}",
                     f"{r['latency_s'] * 1e6:.1f}", f"{r['latency_ratio']:.2f}x", r["cores"]])
    print(format_table(["thresholds", "θ_Δ", "ppl", "Δppl", "site events/token", "MACs skipped", "µJ/token", "dense ÷",
                        "state µJ", "µs/token", "dense ÷", "cores"], rows,
                       title=f"\n{args.model} w{args.bits}a{args.bits} on SENECA, {len(tokens):,} tokens; dense 16-bit "
                             f"{dense['energy_j'] * 1e6:.2f} µJ, {dense['latency_s'] * 1e6:.1f} µs, {dense['cores']} cores; "
                             f"{seconds:.0f} s"))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "delta.json", json.dumps({"model": args.model, "bits": args.bits, "data": args.data, "split": args.split,
                                               "tokens": len(tokens), "seconds": seconds, "dense": dense,
                                               "points": results[1:]}, indent=1))
    print(f"wrote {out / 'delta.json'}")


if __name__ == "__main__":
    _common.entry(main)
