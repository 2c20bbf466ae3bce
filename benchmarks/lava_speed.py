"""Tokens per second of the Lava backend against our executor and simulator: same graph, same tokens, one run.

    python benchmarks/lava_speed.py --model rwkv4-tiny --tokens 16 [--json out.json]
    python benchmarks/lava_speed.py --small --json OUT      (a one-layer random model, 2 tokens)

For lava-nc (Loihi2SimCfg, `.venv-lava`) both block modes are timed through the client the generation backend
uses: "hierarchical" (one Lava process — one OS process — per process of the graph, a hierarchical process
per layer) and "fused" (one Lava process per layer). The first token (which compiles the Lava network and
starts its processes) is timed apart from the steady tokens after it; the logits of every run are checked
against the executor's.
"""

from __future__ import annotations

import time

import _common
import numpy as np



def timed(step, tokens) -> tuple[np.ndarray, float, float]:
    """Outputs, seconds of the first token, steady tokens/s over the others."""
    t0 = time.perf_counter()
    outs = [step(tokens[0])]
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs += [step(t) for t in tokens[1:]]
    return np.stack(outs), first, (len(tokens) - 1) / (time.perf_counter() - t0)


def one_layer_model() -> str:
    """--small's model: one layer (the hierarchical form starts an OS process per process of the graph)."""
    return _common.tiny_model(n_layer=1)


SMALL = {"model": one_layer_model, "tokens": 2}  # --small: a one-layer random model, the first token and one more


def main(argv: list[str] | None = None) -> int:
    ap = _common.parser(__file__, __doc__, whole_doc=True)
    ap.add_argument("--model", default="rwkv4-tiny", help="zoo model, or a model file (θ = 0) (default: %(default)s)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens of the sample text (default: %(default)s)")
    ap.add_argument("--json", help="write the figures as JSON")
    args = _common.parse_args(ap, argv, SMALL)
    if args.tokens < 2:
        ap.error("--tokens must be at least 2")
    from eventllm.pipeline import place
    from eventllm.process.executor import Executor
    from eventllm.process.lava.client import LavaClient
    from sim.engine import Simulator

    loaded, graph, tokens = _common.zoo(args.model)
    tokens = tokens[: args.tokens]
    hw = place(graph, "seneca")
    rows = []
    ex = Executor(graph)
    ref, first, rate = timed(ex.step, tokens)
    rows.append({"backend": "executor (numpy)", "processes": len(graph), "first_token_s": first, "tokens_per_s": rate, "max_abs_diff": 0.0})
    sim = Simulator(graph, hw.mapping, hw.costs)
    out, first, rate = timed(sim.step, tokens)
    rows.append({"backend": "simulator (message engine)", "processes": len(graph), "first_token_s": first, "tokens_per_s": rate,
                 "max_abs_diff": float(np.abs(out - ref).max())})
    for blocks in ("fused", "hierarchical"):
        t0 = time.perf_counter()
        with LavaClient(graph, blocks) as lava:
            start = time.perf_counter() - t0
            out, first, rate = timed(lava.step, tokens)
            hold = lava.hold
        rows.append({"backend": f"lava-nc, {blocks} blocks", "processes": len(graph), "steps_per_token": hold,
                     "start_s": start, "first_token_s": first, "tokens_per_s": rate, "max_abs_diff": float(np.abs(out - ref).max())})
    print(f"{loaded.name} with {'its shipped θ' if loaded.thresholds else 'θ = 0'}, {len(tokens)} tokens of the sample text, "
          "this CPU, one run")
    print(f"{'backend':<30} {'steps/token':>11} {'start+first s':>14} {'tokens/s':>10} {'vs executor':>12} {'max |Δ logit|':>14}")
    for r in rows:
        print(f"{r['backend']:<30} {r.get('steps_per_token', 1):>11} {r.get('start_s', 0) + r['first_token_s']:>14.2f} "
              f"{r['tokens_per_s']:>10.2f} {r['tokens_per_s'] / rows[0]['tokens_per_s']:>11.4f}x {r['max_abs_diff']:>14.1e}")
    if args.json:
        _common.write_json(args.json, {"model": args.model, "tokens": len(tokens), "rows": rows})
    return 0


if __name__ == "__main__":
    _common.entry(main)
