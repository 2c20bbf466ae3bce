"""Simulator speed: simulated tokens/s against plain torch recurrent inference of the same model, same CPU.

    python benchmarks/simulator.py [--tokens N] [--trace-tokens N] [--skip-430m]

Both run one token at a time (torch `model.step` with its state; the simulator with every count, energy and
latency computed), on the same tokens, one after the other in this process. Goal: ratio ≥ 0.5.

Then the trace engine against the message engine on the same graph and mapping: trace tokens/s with the event
masks given (as they arrive from a GPU), and with the masks made here by torch in sequence mode on this CPU,
each ÷ message-engine tokens/s. Goal: ≥ 100x (1000x with masks from a GPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import _common  # noqa: F401  (sets up the import path)
import torch

from eventllm.report import format_table


def time_torch(model, tokens) -> float:
    state = model.init_state()
    model.step(tokens[0], state)  # warm-up
    state = model.init_state()
    t = time.perf_counter()
    for tok in tokens:
        _, state = model.step(tok, state)
    return len(tokens) / (time.perf_counter() - t)


def time_sim(graph, tokens, topology="seneca") -> tuple[float, object]:
    from mapping import map_graph
    from sim.costs import load_costs
    from sim.engine import Simulator

    m = map_graph(graph, topology)
    sim = Simulator(graph, m, load_costs("seneca"))
    sim.step(tokens[0])
    sim.reset()
    t = time.perf_counter()
    for tok in tokens:
        sim.step(tok)
    return len(tokens) / (time.perf_counter() - t), m


def time_trace(graph, model, tokens, topology="seneca") -> tuple[float, float]:
    """Trace-engine tokens/s: counting only (masks made beforehand), and torch masks + counting."""
    from eventllm.masks import event_masks
    from mapping import map_graph
    from sim.costs import load_costs
    from sim.trace import TraceEngine

    eng = TraceEngine(graph, map_graph(graph, topology), load_costs("seneca"))
    t = time.perf_counter()
    chunks = list(event_masks(model, graph, tokens, chunk=256))
    t_masks = time.perf_counter() - t
    eng.add(*chunks[0])  # warm-up
    eng.reset()
    t = time.perf_counter()
    for part, masks in chunks:
        eng.add(part, masks)
    t_count = time.perf_counter() - t
    return len(tokens) / t_count, len(tokens) / (t_count + t_masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--trace-tokens", type=int, default=1024, help="tokens for the trace engine (default: %(default)s)")
    ap.add_argument("--skip-430m", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads")
    rows = []
    loaded, graph, tokens = _common.zoo("rwkv4-tiny")
    tokens = (tokens * 4)[: args.tokens]
    t_torch = time_torch(loaded.model, tokens)
    t_sim, m = time_sim(graph, tokens)
    rows.append(["zoo:rwkv4-tiny (calibrated θ)", f"{m.cores_used:,}", f"{t_torch:.1f}", f"{t_sim:.1f}", f"{t_sim / t_torch:.2f}"])
    trace_rows = []
    long = (loaded.tokenizer.encode(_common.SAMPLE_TEXT) * 64)[: args.trace_tokens]
    t_count, t_all = time_trace(graph, loaded.model, long)
    trace_rows.append(["zoo:rwkv4-tiny (calibrated θ)", f"{t_sim:.1f}", f"{t_count:,.0f}", f"{t_count / t_sim:,.0f}x",
                       f"{t_all:,.0f}", f"{t_all / t_sim:,.0f}x"])
    if not args.skip_430m:
        from eventllm.process.build import build_graph

        model = _common.rwkv_430m()
        graph = build_graph(model, name="RWKV-4 430M shape")
        toks = torch.randint(0, 50277, (args.tokens,), generator=torch.Generator().manual_seed(0)).tolist()
        t_torch = time_torch(model, toks)
        t_sim, m = time_sim(graph, toks)
        rows.append(["RWKV-4 430M shape (random weights, θ = 0)", f"{m.cores_used:,}", f"{t_torch:.2f}", f"{t_sim:.2f}", f"{t_sim / t_torch:.2f}"])
        long = torch.randint(0, 50277, (args.trace_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
        t_count, t_all = time_trace(graph, model, long)
        trace_rows.append(["RWKV-4 430M shape (random weights, θ = 0)", f"{t_sim:.2f}", f"{t_count:,.0f}", f"{t_count / t_sim:,.0f}x",
                           f"{t_all:,.1f}", f"{t_all / t_sim:,.1f}x"])
    print(format_table(["model", "SENECA cores", "torch tok/s", "simulator tok/s", "sim / torch"], rows,
                       title=f"Recurrent inference, {args.tokens} tokens one at a time (goal: sim / torch ≥ 0.5)"))
    print(format_table(["model", "message tok/s", "trace tok/s (masks given)", "trace ÷ message", "trace tok/s (+ torch masks on this CPU)",
                        "trace ÷ message"], trace_rows,
                       title=f"\nTrace engine vs message engine, same graph and mapping, {args.trace_tokens} tokens in chunks of 256 "
                             "(goal: ≥ 100x; 1000x with masks from a GPU)"))


if __name__ == "__main__":
    main()
