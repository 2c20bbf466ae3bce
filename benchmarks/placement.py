"""Placement quality and mapping speed, measured side by side in one run.

    python benchmarks/placement.py [--skip-3b] [--json OUT]
    python benchmarks/placement.py --small --json OUT      (tiny shapes, seconds)

For zoo:rwkv4-tiny (its built graph with measured event rates) and an RWKV-4 430M-shaped graph (shapes only,
dense rates): events × hops per token of the bisection placement against sequential (row-major) and random
placement on the SENECA preset. Then the RWKV-4 3B shape (32 layers, d_model 2560) onto a multi-chip SENECA
mesh sized to fit it: cores used and wall time.
"""

from __future__ import annotations

import os
import platform
import time

import _common

from eventllm.report import format_table

PLACEMENTS = ("bisection", "sequential", "random")
# --small: shapes of a layer or two instead of 430M and 3B, event rates from a few tokens
SMALL = {"shape": (1, 64), "large_shape": (2, 128), "rate_tokens": 4}


def zoo_graph(rate_tokens: int):
    from eventllm.process.executor import measure_event_rates

    _, graph, tokens = _common.zoo("rwkv4-tiny")
    graph.meta["event_rates"] = measure_event_rates(graph, tokens[:rate_tokens])
    return graph


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--skip-3b", action="store_true")
    ap.add_argument("--shape", type=_common.shape, default=(24, 1024),
                    help="the shape compared beside zoo:rwkv4-tiny (default: 24x1024, RWKV-4 430M)")
    ap.add_argument("--large-shape", type=_common.shape, default=(32, 2560),
                    help="the shape mapped onto a multi-chip mesh (default: 32x2560, RWKV-4 3B)")
    ap.add_argument("--rate-tokens", type=int, default=64, help="sample-text tokens the zoo graph's event rates are measured on")
    ap.add_argument("--json", help="write the figures as JSON")
    args = _common.parse_args(ap, argv, SMALL)
    from eventllm.process.build import rwkv_shape_graph
    from eventllm.pipeline import map_graph

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows, figures = [], {"placement": {}}
    layers, width = args.shape
    for label, graph in (("zoo:rwkv4-tiny", zoo_graph(args.rate_tokens)),
                         (f"{_common.shape_label(layers, width)} ({layers} x {width})", rwkv_shape_graph(layers, width))):
        results = {pl: map_graph(graph, "seneca", placement=pl) for pl in PLACEMENTS}
        h = {pl: m.hop_traffic() for pl, m in results.items()}
        b = results["bisection"]
        figures["placement"][label] = {"cores": b.cores_used, "hop_traffic": h, "map_seconds": b.seconds,
                                       "bisection_vs_sequential": h["bisection"] / h["sequential"],
                                       "bisection_vs_random": h["bisection"] / h["random"]}
        rows.append([label, f"{b.cores_used:,}", f"{h['bisection']:,.0f}", f"{h['sequential']:,.0f}", f"{h['random']:,.0f}",
                     f"{h['bisection'] / h['sequential']:.2f}", f"{h['bisection'] / h['random']:.2f}", f"{b.seconds:.2f}"])
    print(format_table(["graph", "cores", "bisection", "sequential", "random", "bis/seq", "bis/rand", "map s"], rows,
                       title="Events x hops per token on the SENECA preset (lower is better)"))
    if not args.skip_3b:
        layers, width = args.large_shape
        t = time.perf_counter()
        graph = rwkv_shape_graph(layers, width)
        m = map_graph(graph, "seneca")
        total = time.perf_counter() - t
        s = m.summary()
        figures["large"] = {"shape": [layers, width], "parameters": graph.n_parameters(), "cores_used": s["cores_used"],
                            "mesh": [m.topology.rows, m.topology.cols], "chips": s["chips"], "shards": s["shards"],
                            "seconds": total, "map_seconds": m.seconds}
        print(f"\n{_common.shape_label(layers, width)} ({layers} x {width}, {graph.n_parameters() / 1e9:.2f}B parameters, "
              "shapes only): "
              f"{s['cores_used']:,} SENECA cores used of a {m.topology.rows}x{m.topology.cols} mesh on {s['chips']} chips, "
              f"{s['shards']:,} shards; build + map {total:.1f} s (mapping alone {m.seconds:.1f} s)")
    if args.json:
        _common.write_json(args.json, figures)


if __name__ == "__main__":
    _common.entry(main)
