"""Simulator speed: simulated tokens/s against plain torch recurrent inference of the same model, same CPU.

    python benchmarks/simulator.py [--tokens N] [--trace-tokens N] [--skip-430m] [--shape 24x1024] [--json OUT]
    python benchmarks/simulator.py --small --json OUT      (a few tokens, a one-layer random shape; seconds)

Both run one token at a time (torch `model.step` with its state; the simulator with every count, energy and
latency computed), on the same tokens, one after the other in this process. Goal: ratio ≥ 0.5.

Then the trace engine against the message engine on the same graph and mapping: trace tokens/s with the event
masks given (as they arrive from a GPU), and with the masks made here by torch in sequence mode on this CPU,
each ÷ message-engine tokens/s. Goal: ≥ 100x (1000x with masks from a GPU).
"""

from __future__ import annotations

import os
import platform
import time

import _common
import torch

from eventllm.report import format_table

TRACE_CHUNK = 256  # tokens per chunk of event masks, as `simulate --data` makes them
SMALL = {"tokens": 4, "trace_tokens": 8, "shape": (1, 64)}  # --small: a few tokens; a one-layer shape for the 430M one


def time_torch(model, tokens) -> float:
    state = model.init_state()
    model.step(tokens[0], state)  # warm-up
    state = model.init_state()
    t = time.perf_counter()
    for tok in tokens:
        _, state = model.step(tok, state)
    return len(tokens) / (time.perf_counter() - t)


def time_sim(graph, tokens, topology="seneca") -> tuple[float, object]:
    from eventllm.pipeline import map_graph
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
    from eventllm.pipeline import map_graph
    from sim.costs import load_costs
    from sim.trace import TraceEngine

    eng = TraceEngine(graph, map_graph(graph, topology), load_costs("seneca"))
    t = time.perf_counter()
    chunks = list(event_masks(model, graph, tokens, chunk=TRACE_CHUNK))
    t_masks = time.perf_counter() - t
    eng.add(*chunks[0])  # warm-up
    eng.reset()
    t = time.perf_counter()
    for part, masks in chunks:
        eng.add(part, masks)
    t_count = time.perf_counter() - t
    return len(tokens) / t_count, len(tokens) / (t_count + t_masks)


def subjects(args):
    """(label, torch model, graph, tokens, trace tokens) of each model timed, made when its turn comes."""
    loaded, graph, tokens = _common.zoo("rwkv4-tiny")
    yield ("zoo:rwkv4-tiny (calibrated θ)", loaded.model, graph, (tokens * 4)[: args.tokens],
           (loaded.tokenizer.encode(_common.SAMPLE_TEXT) * 64)[: args.trace_tokens])
    if not args.skip_430m:
        from eventllm.process.build import build_graph

        model = _common.random_rwkv(*args.shape)
        name = _common.shape_label(*args.shape)
        yield (f"{name} (random weights, θ = 0)", model, build_graph(model, name=name),
               torch.randint(0, _common.RWKV4_VOCAB, (args.tokens,), generator=torch.Generator().manual_seed(0)).tolist(),
               torch.randint(0, _common.RWKV4_VOCAB, (args.trace_tokens,), generator=torch.Generator().manual_seed(1)).tolist())


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--trace-tokens", type=int, default=1024, help="tokens for the trace engine (default: %(default)s)")
    ap.add_argument("--skip-430m", action="store_true")
    ap.add_argument("--shape", type=_common.shape, default=(24, 1024), help="the random-weight model's LAYERSxWIDTH "
                    "(default: 24x1024, RWKV-4 430M)")
    ap.add_argument("--json", help="write the figures as JSON")
    args = _common.parse_args(ap, argv, SMALL)
    if min(args.tokens, args.trace_tokens) < 1:
        ap.error("--tokens and --trace-tokens must be at least 1")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads")
    rows, trace_rows, figures = [], [], {}
    for label, model, graph, toks, long in subjects(args):
        digits = 1 if label.startswith("zoo:") else 2  # the large model runs at a few tokens/s
        t_torch = time_torch(model, toks)
        t_sim, m = time_sim(graph, toks)
        rows.append([label, f"{m.cores_used:,}", f"{t_torch:.{digits}f}", f"{t_sim:.{digits}f}", f"{t_sim / t_torch:.2f}"])
        t_count, t_all = time_trace(graph, model, long)
        trace_rows.append([label, f"{t_sim:.{digits}f}", f"{t_count:,.0f}", f"{t_count / t_sim:,.0f}x",
                           f"{t_all:,.{digits - 1}f}", f"{t_all / t_sim:,.{digits - 1}f}x"])
        figures[label] = {"cores": m.cores_used, "torch_tokens_per_s": t_torch, "simulator_tokens_per_s": t_sim,
                          "sim_vs_torch": t_sim / t_torch, "trace_tokens_per_s": t_count, "trace_vs_message": t_count / t_sim,
                          "trace_with_masks_tokens_per_s": t_all, "trace_with_masks_vs_message": t_all / t_sim}
    print(format_table(["model", "SENECA cores", "torch tok/s", "simulator tok/s", "sim / torch"], rows,
                       title=f"Recurrent inference, {args.tokens} tokens one at a time (goal: sim / torch ≥ 0.5)"))
    print(format_table(["model", "message tok/s", "trace tok/s (masks given)", "trace ÷ message", "trace tok/s (+ torch masks on this CPU)",
                        "trace ÷ message"], trace_rows,
                       title=f"\nTrace engine vs message engine, same graph and mapping, {args.trace_tokens} tokens in chunks of "
                             f"{TRACE_CHUNK} (goal: ≥ 100x; 1000x with masks from a GPU)"))
    if args.json:
        _common.write_json(args.json, {"tokens": args.tokens, "trace_tokens": args.trace_tokens, "models": figures})

if __name__ == "__main__":
    _common.entry(main)
