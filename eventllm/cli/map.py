"""`eventllm map`: a process graph onto neuromorphic cores."""

from __future__ import annotations

from pathlib import Path

from eventllm.cli.common import check_outputs, probability, seed


def cmd_map(args) -> int:

    from eventllm.process.graph import ProcessGraph
    from eventllm.report import format_table
    from eventllm.pipeline import map_graph

    if args.heatmap is not None:  # refused before the mapping is made (and written)
        from matplotlib.backend_bases import FigureCanvasBase

        from eventllm.errors import ConfigError

        if args.no_heatmap:
            raise ConfigError(f"--heatmap {args.heatmap} names the heat map that --no-heatmap turns off; drop one of them")
        kinds = FigureCanvasBase.get_supported_filetypes()
        kind = Path(args.heatmap).suffix[1:].lower()
        if kind and kind not in kinds:
            raise ConfigError(f"--heatmap {args.heatmap}: cannot draw a .{kind} picture; give a name ending in .png "
                              f"(or {', '.join('.' + k for k in sorted(kinds) if k != 'png')})")
    check_outputs(args.output, None if args.no_heatmap else args.heatmap or Path(args.output).with_suffix(".png"))
    graph = ProcessGraph.load(args.graph)
    m = map_graph(graph, args.topology, placement=args.placement, seed=args.seed, fill=args.fill)
    s = m.summary()
    t = m.topology
    print(f"{graph.meta.get('model') or args.graph} on {t.name}: {t.note or f'{t.rows}x{t.cols}'}")
    rows = [
        ["cores (used / in the mesh)", f"{s['cores_used']:,} / {s['cores']:,} on {s['chips']} chip(s)"],
        ["shards (processes split)", f"{s['shards']:,} ({s['split_processes']} split)"],
        ["parameter memory", f"{s['param_bytes'] / 2**20:,.2f} MiB at {t.core.word_bits}-bit words"],
        ["memory per used core", f"max {s['core_memory_max'] / 1024:,.1f} KiB, mean {s['core_memory_mean'] / 1024:,.1f} KiB of {t.core.memory_bytes / 1024:,.0f} KiB"],
        ["NoC events per token", f"{s['noc_events_per_token']:,.0f} ({graph.meta.get('event_rates') and 'measured rates' or 'dense rates'})"],
        ["events x hops per token", f"{s['hop_traffic']:,.0f}"],
        ["chip-to-chip crossings x events", f"{s['chip_crossing_traffic']:,.0f}"],
        ["max link load (events/token)", f"{s['max_link_load']:,.0f} over {s['links_used']:,} links used"],
        ["time", f"{s['seconds']:.2f} s ({args.placement}{f', fill {args.fill:g}' if args.fill < 1 else ''})"],
    ]
    print(format_table(["", "value"], rows))
    if args.placement == "bisection":
        for base in ("sequential", "random"):
            other = map_graph(graph, t, placement=base, seed=args.seed, fill=args.fill).hop_traffic()
            if other > 0:
                print(f"events x hops vs {base} placement: {s['hop_traffic'] / other:.2f}x ({100 * (1 - s['hop_traffic'] / other):.0f}% less)")
    png = None
    if not args.no_heatmap and t.noc.kind != "custom":  # drawn first: a picture that cannot be written leaves no mapping
        png = m.heatmap(Path(args.heatmap or Path(args.output).with_suffix(".png")))
    m.save(args.output)
    print(f"wrote {args.output}" + (f" and {png}" if png else ""))
    return 0


def add_parser(sub) -> None:
    mp = sub.add_parser("map", help="map a process graph onto neuromorphic cores -> mapping JSON + core heat map")
    mp.add_argument("graph", help="graph folder (from `eventllm build`)")
    mp.add_argument("--topology", default="seneca", help="preset (seneca, loihi2), PRESET:ROWSxCOLS or a TOML file (default: %(default)s)")
    mp.add_argument("--placement", default="bisection", choices=["bisection", "sequential", "random"], help="placement method (default: %(default)s)")
    mp.add_argument("--seed", type=seed, default=0, help="seed for the placement (default: %(default)s)")
    mp.add_argument("--fill", type=probability, default=1.0, help="use at most this fraction of each core's memory: below 1, "
                    "more cores, and each large projection cut into more shards that work in parallel (lower latency) "
                    "(default: %(default)s)")
    mp.add_argument("-o", "--output", required=True, help="mapping JSON to write")
    mp.add_argument("--heatmap", help="PNG of per-core memory and traffic (default: OUTPUT with .png)")
    mp.add_argument("--no-heatmap", action="store_true", help="do not draw the heat map")
    mp.set_defaults(func=cmd_map)
