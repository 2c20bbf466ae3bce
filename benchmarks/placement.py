"""Placement quality and mapping speed, measured side by side in one run.

    python benchmarks/placement.py [--skip-3b]

For zoo:rwkv4-tiny (its built graph with measured event rates) and an RWKV-4 430M-shaped graph (shapes only,
dense rates): events × hops per token of the bisection placement against sequential (row-major) and random
placement on the SENECA preset. Then the RWKV-4 3B shape (32 layers, d_model 2560) onto a multi-chip SENECA
mesh sized to fit it: cores used and wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import _common

from eventllm.report import format_table


def zoo_graph():
    from eventllm.process.executor import measure_event_rates

    _, graph, tokens = _common.zoo("rwkv4-tiny")
    graph.meta["event_rates"] = measure_event_rates(graph, tokens[:64])
    return graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-3b", action="store_true")
    args = ap.parse_args()
    from eventllm.process.build import rwkv_shape_graph
    from mapping import map_graph

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows = []
    for label, graph in (("zoo:rwkv4-tiny", zoo_graph()), ("RWKV-4 430M shape (24 x 1024)", rwkv_shape_graph(24, 1024))):
        results = {pl: map_graph(graph, "seneca", placement=pl) for pl in ("bisection", "sequential", "random")}
        h = {pl: m.hop_traffic() for pl, m in results.items()}
        b = results["bisection"]
        rows.append([label, f"{b.cores_used:,}", f"{h['bisection']:,.0f}", f"{h['sequential']:,.0f}", f"{h['random']:,.0f}",
                     f"{h['bisection'] / h['sequential']:.2f}", f"{h['bisection'] / h['random']:.2f}", f"{b.seconds:.2f}"])
    print(format_table(["graph", "cores", "bisection", "sequential", "random", "bis/seq", "bis/rand", "map s"], rows,
                       title="Events x hops per token on the SENECA preset (lower is better)"))
    if not args.skip_3b:
        t = time.perf_counter()
        graph = rwkv_shape_graph(32, 2560)
        m = map_graph(graph, "seneca")
        total = time.perf_counter() - t
        s = m.summary()
        print(f"\nRWKV-4 3B shape (32 x 2560, {graph.n_parameters() / 1e9:.2f}B parameters, shapes only): "
              f"{s['cores_used']:,} SENECA cores used of a {m.topology.rows}x{m.topology.cols} mesh on {s['chips']} chips, "
              f"{s['shards']:,} shards; build + map {total:.1f} s (mapping alone {m.seconds:.1f} s)")


if __name__ == "__main__":
    main()
