"""`eventllm simulate`: a mapped graph on a prompt or a text: energy and latency per token."""

from __future__ import annotations

import sys
from pathlib import Path

from eventllm.cli.common import (
    LAVA_BLOCKS, SIMULATE_PROMPT, check_outputs, enough_tokens, lava_blocks, non_negative_int, positive_int, projection_list,
    write_json,
)


def cmd_simulate(args) -> int:

    from eventllm.errors import ConfigError
    from eventllm.process.graph import ProcessGraph
    from eventllm.pipeline import Hardware, load_costs, load_mapping, simulate, topology_note, trace

    given = [f for f, v in (("--data", args.data), ("--token-ids", args.token_ids), ("--prompt", args.prompt)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{given[0]} and {given[1]} both give the tokens to run; pass only one of --data, --token-ids and --prompt")
    if args.segments > 1 and args.data is None:
        raise ConfigError("--segments cuts the text of --data; drop it, or pass --data")
    lava_blocks(args)
    sanafe_options(args)
    check_outputs(args.json, folder=args.report)
    graph = ProcessGraph.load(args.graph)
    mapping = load_mapping(args.mapping, graph)
    costs = load_costs(args.costs or mapping.topology.name)
    if note := topology_note(costs, mapping.topology.name):
        print(note, file=sys.stderr)
    if args.backend == "sanafe" and graph.delta_sites():  # SANA-FE's sources follow the torch model's masks: values, not changes
        raise ConfigError("delta events cannot be driven on SANA-FE yet; drop --backend sanafe, or build the graph without --delta")
    if args.backend == "lava" and graph.delta_sites():
        raise ConfigError("delta events are not bridged to Lava yet; drop --backend lava, or build the graph without --delta")
    if args.data:
        if args.backend == "sanafe":
            raise ConfigError("--backend sanafe runs the tokens of a prompt; drop --data and pass --prompt or --token-ids")
        if args.backend == "lava":
            raise ConfigError("--backend lava runs a prompt token by token (about 0.3 tokens/s on the tiny model); "
                              "drop --data and pass --prompt or --token-ids")
        return _simulate_text(args, graph, mapping, costs)
    vocab = graph["emb"].vars["weights"].value.shape[0] if "emb" in graph.processes else 0
    if args.token_ids is not None:
        try:
            tokens = [int(t) for t in args.token_ids.split(",")]
        except ValueError:
            raise ConfigError(f"--token-ids must be comma-separated integers, got {args.token_ids!r}") from None
        bad = [t for t in tokens if vocab and not 0 <= t < vocab]
        if bad:  # the trace engine's torch model would fail with an IndexError
            raise ConfigError(f"--token-ids: {bad[0]} is outside the graph's vocabulary (0..{vocab - 1}); give ids of its tokenizer")
    else:
        from eventllm.tokenizer import load_tokenizer

        if not (Path(args.graph) / "tokenizer.json").exists():
            raise ConfigError(f"{args.graph} has no tokenizer.json (built from a model without one); pass --token-ids")
        args.prompt = SIMULATE_PROMPT if args.prompt is None else args.prompt
        tokens = load_tokenizer(args.graph, vocab).encode(args.prompt)
    tokens = tokens[: args.max_tokens or 64]
    if not tokens:
        raise ConfigError("the prompt gives no tokens; pass a non-empty --prompt")
    modes = ("thresholded", "natural", "dense") if args.compare_dense else ("thresholded",)
    hw = Hardware(graph, mapping, costs)
    if args.engine == "trace":
        runs = trace(hw, _graph_model(args, graph), tokens, modes, progress=not args.quiet)
    else:
        runs = simulate(hw, tokens, modes, progress=not args.quiet)
    from eventllm.pipeline import settings

    info = {"graph": str(args.graph), "model": graph.meta.get("model") or args.graph, "mapping": str(args.mapping),
            "topology": mapping.topology.name, "costs": costs.name, "settings": settings(graph),
            "prompt": args.prompt, "token_ids": tokens}
    if args.backend == "lava":
        info["lava"] = _simulate_on_lava(args, runs["thresholded"], tokens)
    if args.backend == "sanafe":
        from eventllm.pipeline import sanafe_compare

        info["sanafe"] = sanafe_compare(hw, _graph_model(args, graph), tokens, args.sanafe_projections, args.sanafe_layer,
                                        progress=not args.quiet)
    code = _simulate_report(args, runs, info, mapping, len(tokens))
    if args.backend == "sanafe":
        _print_sanafe(info["sanafe"])
    return code


def sanafe_options(args) -> None:
    """--sanafe-layer and --sanafe-projections only with --backend sanafe, and not both; sanafe installed."""
    from eventllm.errors import ConfigError

    given = [f for f, v in (("--sanafe-layer", args.sanafe_layer), ("--sanafe-projections", args.sanafe_projections)) if v is not None]
    if given and args.backend != "sanafe":
        raise ConfigError(f"{given[0]} chooses what runs on SANA-FE; drop it, or add --backend sanafe")
    if len(given) > 1:
        raise ConfigError("--sanafe-layer and --sanafe-projections both choose the projections; pass one of them")
    if args.backend == "sanafe":
        from eventllm.pipeline import require_sanafe

        require_sanafe()


def _print_sanafe(s: dict) -> None:
    """Ours and SANA-FE's figures for every projection, side by side (counts over the tokens; µJ and µs per token)."""
    from eventllm.report import format_table

    T = s["tokens"]
    rows = []
    for r in s["projections"]:
        o, f, d, n = r["ours"], r["sanafe"], r.get("sanafe_detailed"), r["sanafe_loihi_yaml"]
        part = lambda x, k: f"{x['energy_by_part_j'][k] / T * 1e6:.3f}"  # noqa: E731
        rows.append([r["name"], f"{o['synaptic_events']:,} / {f['synaptic_events']:,}",
                     f"{o['messages']:,} ({o['messages_per_destination_core']:,}) / {f['messages']:,}", f"{o['hops']:,} / {f['hops']:,}",
                     f"{part(o, 'synapse')} / {part(f, 'synapse')}", f"{part(o, 'neuron')} / {part(f, 'neuron')}",
                     f"{part(o, 'network')} / {part(f, 'network')}", f"{100 * r['agreement']['energy_j']:+.3f}%",
                     f"{o['latency_s'] * 1e6:.3f} / {f['latency_s'] * 1e6:.3f}" + (f" / {d['latency_s'] * 1e6:.3f}" if d else ""),
                     f"{n['energy_j'] / T * 1e6:.3f}"])
    print(format_table(["projection", "synaptic events", "messages (per dest. core)", "hops", "synapse µJ", "neuron µJ",
                        "network µJ", "energy Δ (SANA-FE ÷ ours − 1)", "µs/token (simple / detailed)", "loihi.yaml µJ"], rows,
                       title=f"\nSANA-FE beside eventllm, {T} tokens, both at the {s['costs']} costs: ours / SANA-FE "
                             "(last column: SANA-FE at its own loihi.yaml)"))
    m = s["model"]
    print(f"whole graph: {m['energy_per_token_j'] * 1e6:.3f} µJ/token ours; {m['with_sanafe_loihi_yaml_projections_energy_per_token_j'] * 1e6:.3f} "
          "µJ/token with these projections as SANA-FE's loihi.yaml counts them (SANA-FE has no graded spikes: "
          "counts, energy and latency are compared, values are not)")


def _simulate_on_lava(args, run: dict, tokens) -> dict:
    """`simulate --backend lava`: the same tokens through the graph on lava-nc, its logits and the events every
    out-port sent (counted by the Lava processes) checked against the simulator's thresholded `run`; Lava has no
    energy model, so the energy and latency stay the simulator's, for the events Lava confirmed."""
    import time

    import numpy as np

    from eventllm.process.lava.client import LavaClient

    ours, expected = run["_logits"], run["_port_events"]
    t0 = time.perf_counter()
    with LavaClient(args.graph, args.lava_blocks) as lava:
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = np.stack([lava.step(t) for t in tokens])
        lava_s = time.perf_counter() - t0
        events = lava.port_events()
        hold = lava.hold
    differ = sorted(p for p in expected if events.get(p) != expected[p])
    out = {"blocks": args.lava_blocks, "steps_per_token": hold, "tokens": len(tokens),
           "max_abs_logit_difference": float(np.abs(got - ours).max()), "ports": len(expected),
           "ports_with_equal_events": len(expected) - len(differ), "ports_with_other_events": differ[:20],
           "events_total": int(sum(events.values())), "lava_start_s": start_s, "lava_tokens_per_s": len(tokens) / lava_s}
    print(f"lava-nc (Loihi2SimCfg, {args.lava_blocks} blocks, {hold} steps per token), {len(tokens)} tokens: logits within "
          f"{out['max_abs_logit_difference']:.1e} of the simulator's; events equal on {out['ports_with_equal_events']} of "
          f"{len(expected)} out-ports ({out['events_total']:,} events); {out['lava_tokens_per_s']:.2f} tokens/s on Lava "
          f"(start {start_s:.1f} s; benchmarks/lava_speed.py compares the speeds)")
    return out


def _graph_model(args, graph):
    """The torch model a graph was built from (its `model` entry, or --model), on --device: the trace engine's
    event masks come from it."""
    from eventllm.errors import ConfigError
    from eventllm.pipeline import graph_model

    spec = args.model or graph.meta.get("model")
    if not spec:
        raise ConfigError(f"{args.graph} does not name its model; pass --model (the model it was built from)")
    return graph_model(graph, spec, args.device)


def _simulate_text(args, graph, mapping, costs) -> int:
    """`simulate --data`: a whole text, cut into --segments (shared among torchrun ranks), on --engine."""
    from eventllm.data import cached_token_stream
    from eventllm.distributed import init_world
    from eventllm.pipeline import simulate_segments
    from eventllm.tokenizer import load_tokenizer

    world = init_world(args.device)
    engine = args.engine or "trace"
    model = _graph_model(args, graph) if engine == "trace" else None  # a wrong --model or --device before the text is read
    vocab = graph["emb"].vars["weights"].value.shape[0] if "emb" in graph.processes else 0
    ids = cached_token_stream(args.data, args.split, load_tokenizer(args.graph, vocab), progress=not args.quiet)
    enough_tokens(ids, args.max_tokens, args.data, args.split)
    ids = (ids[: args.max_tokens] if args.max_tokens else ids).astype("int64").tolist()
    modes = ("thresholded", "natural", "dense") if args.compare_dense else ("thresholded",)
    runs = simulate_segments(graph, mapping, costs, ids, modes, args.segments, world, engine, model, progress=not args.quiet)
    from eventllm.pipeline import settings

    info = {"graph": str(args.graph), "model": graph.meta.get("model") or args.graph, "mapping": str(args.mapping),
            "topology": mapping.topology.name, "costs": costs.name, "settings": settings(graph), "data": args.data, "split": args.split,
            "engine": engine, "segments": args.segments, "prompt": None, "token_ids": None}
    return _simulate_report(args, runs, info, mapping, len(ids))


def _simulate_report(args, runs: dict, info: dict, mapping, n_tokens: int) -> int:

    from eventllm.distributed import is_main_process
    from eventllm.report import format_table, pct
    from eventllm.pipeline import plots, results_json

    modes = list(runs)
    model = info["model"]
    result = results_json(runs, info)
    main = runs["thresholded"]
    rows = []
    for m in modes:
        r = runs[m]
        rows.append([m, f"{r['energy_per_token_j'] * 1e6:.3f}", f"{r['latency_per_token_s'] * 1e6:.2f}", pct(r["activation_sparsity"]),
                     f"{r['synaptic_ops_per_token'] / 1e6:.3f}",
                     f"{r['counts_per_token']['weight_reads'] * mapping.topology.core.word_bytes / 2**20:.2f}",
                     f"{r['counts_per_token']['packets']:,.0f}",
                     f"{r['energy_per_token_j'] / main['energy_per_token_j']:.2f}x", f"{r['latency_per_token_s'] / main['latency_per_token_s']:.2f}x"])
    print(format_table(["run", "µJ/token", "µs/token", "sparsity", "Msynops", "weight MiB read", "packets", "energy vs thr", "latency vs thr"],
                       rows, title=f"{model} on {mapping.topology.name} ({mapping.cores_used} cores), {n_tokens} tokens"))
    layer_rows = [[b["layer"], f"{b['energy_j'] * 1e6:.3f}", f"{b['latency_s'] * 1e6:.2f}", f"{b['synaptic_ops'] / 1e3:,.0f}"]
                  for b in main["by_layer"]]
    print(format_table(["layer", "µJ/token", "µs/token", "ksynops"], layer_rows, title="\nBy layer (thresholded)"))
    kind_rows = [[k, f"{v * 1e6:.3f}", pct(v / main["energy_per_token_j"])] for k, v in main["energy_breakdown_j"].items()]
    print(format_table(["energy kind", "µJ/token", "share"], kind_rows, title="\nBy kind of action (thresholded)"))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.report and is_main_process():
        from eventllm.atomic import atomic_folder

        with atomic_folder(args.report, merge=True) as folder:  # the report's files appear together
            write_json(folder / "simulation.json", result)
            written = plots(runs, mapping, folder, model)
        for path in written:
            print(f"wrote {Path(args.report) / path.name}")
    return 0


def add_parser(sub) -> None:
    sm = sub.add_parser("simulate", help="simulate a mapped graph on a prompt: energy and latency per token")
    sm.add_argument("graph", help="graph folder (from `eventllm build`)")
    sm.add_argument("--mapping", required=True, help="mapping JSON (from `eventllm map`)")
    sm.add_argument("--costs", help="cost preset (seneca, loihi2) or TOML file (default: the mapping's topology preset)")
    sm.add_argument("--prompt", help=f"text to run (default: {SIMULATE_PROMPT!r})")
    sm.add_argument("--token-ids", help="comma-separated token ids instead of --prompt")
    sm.add_argument("--data", help="a whole text instead of a prompt: a .txt(.xz) file or a folder of them")
    sm.add_argument("--split", default="all", choices=["all", "train", "valid", "test"], help="part of each book for --data (default: %(default)s)")
    sm.add_argument("--max-tokens", type=positive_int, help="simulate at most this many tokens (default: 64 of a prompt, all of --data)")
    sm.add_argument("--engine", choices=["trace", "message"], help="trace: counters from the torch model's event masks, "
                    "many tokens at once; message: the message-passing reference, token by token (default: trace for --data, "
                    "message for a prompt)")
    sm.add_argument("--segments", type=positive_int, default=1, help="with --data: N contiguous segments, each from a fresh state; "
                    "under torchrun the ranks share them (default: %(default)s)")
    sm.add_argument("--model", help="the torch model the graph was built from, for the trace engine (default: the graph's)")
    sm.add_argument("--device", help="where the trace engine's torch model runs: cpu or cuda (default: cpu)")
    sm.add_argument("--compare-dense", action="store_true", help="also simulate θ = 0 with and without zero skipping")
    sm.add_argument("--backend", default="sim", choices=["sim", "lava", "sanafe"], help="lava: also run the prompt on lava-nc "
                    "(.venv-lava) and check its logits and per-port event counts against the simulator's; sanafe: also run "
                    "the projections on SANA-FE (the same tokens, costs and cores) and print its counts, energy and latency "
                    "beside ours (default: %(default)s)")
    sm.add_argument("--sanafe-layer", type=non_negative_int, help="with --backend sanafe: only the projections of this layer (default: all)")
    sm.add_argument("--sanafe-projections", type=projection_list, metavar="NAME,…", help="with --backend sanafe: only these "
                    "projections (process names as in the graph, e.g. L0.ffn.key)")
    sm.add_argument("--lava-blocks", choices=["hierarchical", "fused"], help=LAVA_BLOCKS)
    sm.add_argument("--json", metavar="OUT", help="write the results as JSON")
    sm.add_argument("--report", metavar="DIR", help="write simulation.json and plots into DIR")
    sm.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sm.set_defaults(func=cmd_simulate)
