"""Energy and latency per token on the SENECA preset: dense vs natural vs thresholded, measured side by side.

    python benchmarks/energy.py [--tokens N] [--skip-430m] [--shape 24x1024] [--json OUT]
    python benchmarks/energy.py --small --json OUT      (a few tokens, a one-layer random shape; seconds)

zoo:rwkv4-tiny and zoo:opt-tiny run with their shipped calibrated thresholds on the built-in sample text.
The RWKV-4 430M-shaped model (--shape) has random weights, so its thresholds are set to reproduce, per projection,
the sparsity measured on zoo:rwkv4-tiny (natural run: the zoo model's natural sparsity; thresholded run:
its calibrated sparsity). Dense = θ = 0 with every entry processed and sent (no zero skipping).
"""

from __future__ import annotations

import os
import platform

import _common
import torch

from eventllm.report import format_table, pct


FIT_TOKENS = 8  # tokens the random-weight model's thresholds are fitted on (the sparsity targets)
SMALL = {"tokens": 4, "shape": (1, 64)}  # --small: a few tokens; a one-layer shape for the 430M one


def run_modes(graph, tokens, modes):
    """modes: {name: (θ setter or None, event_driven)} → {name: summary}."""
    from mapping import map_graph
    from sim.costs import load_costs
    from sim.engine import Simulator
    from sim.report import public, summarize

    m = map_graph(graph, "seneca")
    out = {}
    for name, (set_theta, event_driven) in modes.items():
        set_theta()
        sim = Simulator(graph, m, load_costs("seneca"), event_driven=event_driven)
        sim.run(tokens)
        s = public(summarize(sim))
        s["blocks_energy_j"] = sum(b["energy_j"] for b in s["by_layer"] if b["layer"].startswith("L"))
        s["blocks_latency_s"] = sum(b["latency_s"] for b in s["by_layer"] if b["layer"].startswith("L"))
        out[name] = s
    return out, m


def theta_setter(graph, values):
    def set_theta():
        for p in graph:
            if p.kind == "threshold":
                p.vars["theta"].value[...] = values[p.name]
    return set_theta


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--skip-430m", action="store_true")
    ap.add_argument("--shape", type=_common.shape, default=(24, 1024), help="the random-weight model's LAYERSxWIDTH "
                    "(default: 24x1024, RWKV-4 430M)")
    ap.add_argument("--json", help="write all figures as JSON")
    args = _common.parse_args(ap, argv, SMALL)
    if args.tokens < 1:
        ap.error(f"--tokens {args.tokens}: give at least 1")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs")
    results = {}
    zoo_sparsity = {}
    for name in ("rwkv4-tiny", "opt-tiny"):
        _, graph, tokens = _common.zoo(name)
        tokens = tokens[: args.tokens]
        calibrated = {p.name: p.vars["theta"].value.copy() for p in graph if p.kind == "threshold"}
        zero = dict.fromkeys(calibrated, 0.0)
        if name == "rwkv4-tiny":
            theta_setter(graph, zero)()
            zoo_sparsity["natural"] = _common.per_projection_sparsity(graph, tokens)
            theta_setter(graph, calibrated)()
            zoo_sparsity["thresholded"] = _common.per_projection_sparsity(graph, tokens)
        modes = {"dense": (theta_setter(graph, zero), False), "natural": (theta_setter(graph, zero), True),
                 "thresholded": (theta_setter(graph, calibrated), True)}
        results[f"zoo:{name}"], m = run_modes(graph, tokens, modes)
        results[f"zoo:{name}"]["cores"] = m.cores_used
        results[f"zoo:{name}"]["tokens"] = len(tokens)
    if not args.skip_430m:
        from eventllm.process.build import build_graph

        key = _common.shape_label(*args.shape)
        graph = build_graph(_common.random_rwkv(*args.shape), name=key)
        toks = torch.randint(0, _common.RWKV4_VOCAB, (max(FIT_TOKENS, args.tokens // 4),),
                             generator=torch.Generator().manual_seed(1)).tolist()
        fit = toks[:FIT_TOKENS]
        _common.set_thresholds_for_sparsity(graph, fit, zoo_sparsity["natural"])
        natural = {p.name: p.vars["theta"].value.copy() for p in graph if p.kind == "threshold"}
        _common.set_thresholds_for_sparsity(graph, fit, zoo_sparsity["thresholded"])
        thresholded = {p.name: p.vars["theta"].value.copy() for p in graph if p.kind == "threshold"}
        modes = {"dense": (theta_setter(graph, dict.fromkeys(natural, 0.0)), False),
                 "natural": (theta_setter(graph, natural), True), "thresholded": (theta_setter(graph, thresholded), True)}
        key += " (zoo sparsity)"
        results[key], m = run_modes(graph, toks, modes)
        results[key]["cores"] = m.cores_used
        results[key]["tokens"] = len(toks)
    rows = []
    for model, r in results.items():
        thr = r["thresholded"]
        for mode in ("dense", "natural", "thresholded"):
            x = r[mode]
            rows.append([model if mode == "dense" else "", mode, pct(x["activation_sparsity"]), f"{x['energy_per_token_j'] * 1e6:.2f}",
                         f"{x['latency_per_token_s'] * 1e6:.1f}", f"{x['energy_per_token_j'] / thr['energy_per_token_j']:.2f}x",
                         f"{x['latency_per_token_s'] / thr['latency_per_token_s']:.2f}x",
                         f"{x['blocks_energy_j'] / thr['blocks_energy_j']:.2f}x", f"{x['blocks_latency_s'] / thr['blocks_latency_s']:.2f}x"])
    print(format_table(["model", "run", "sparsity", "µJ/token", "µs/token", "energy ÷ thr", "latency ÷ thr",
                        "blocks energy ÷ thr", "blocks latency ÷ thr"], rows,
                       title="SENECA preset, per token (blocks = RWKV/OPT layers only, without embedding and head)"))
    for model, r in results.items():
        share = r["thresholded"]["by_layer"][-1]["energy_j"] / r["thresholded"]["energy_per_token_j"]
        print(f"{model}: {r['cores']:,} cores, {r['tokens']} tokens; head (output layer) share of thresholded energy {pct(share)}")
    if args.json:
        _common.write_json(args.json, results)


if __name__ == "__main__":
    _common.entry(main)
