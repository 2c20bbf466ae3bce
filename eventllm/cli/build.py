"""`eventllm build`: a model (with thresholds) as an event-driven process graph folder."""

from __future__ import annotations

from pathlib import Path

from eventllm.cli.common import (
    ALLOW_PARTIAL, load_model_args, non_negative_float, positive_int, precision_args, projection_list, read_tokens,
)


def cmd_build(args) -> int:

    from eventllm import pipeline
    from eventllm.atomic import atomic_folder
    from eventllm.data import SAMPLE_TEXT
    from eventllm.process.graph import check_graph_output
    from eventllm.report import format_table, pct

    check_graph_output(args.output, args.force)
    if args.delta_projections and args.delta is None:
        from eventllm.errors import ConfigError

        raise ConfigError("--delta-projections selects the sites of --delta: give --delta THETA_D too")
    loaded = load_model_args(args)
    if args.data:
        ids = read_tokens(loaded, args.data, args.split, args.tokens)
        source = f"{args.data} [{args.split}]"
    else:
        ids = loaded.tokenizer.encode(SAMPLE_TEXT)[: args.tokens]
        source = "the built-in sample text"
    graph = pipeline.build(loaded.model, loaded.name, rate_tokens=ids, source=source, delta=args.delta,
                           delta_projections=args.delta_projections)
    graph.meta["thresholds"] = loaded.thresholds
    rates = graph.meta["event_rates"]
    with atomic_folder(args.output) as folder:  # a complete graph folder, or the previous one
        graph.save(folder)
        tok_file = getattr(loaded.tokenizer, "path", None)
        if tok_file is not None:  # the graph folder carries its tokenizer, so `simulate --prompt` needs nothing else
            import shutil

            shutil.copyfile(tok_file, folder / "tokenizer.json")
    print(format_table(["kind", "processes", "parameters", "state bytes"], graph.summary_rows(),
                       title=f"Process graph of {loaded.name} ({len(graph)} processes, {len(graph.connections())} connections)"))
    dense = graph.dense_synops_per_token()
    measured = sum(rates["synops"].values())
    print(f"\nparameters {graph.n_parameters():,}; weights {graph.nbytes('weight') / 2**20:.1f} MiB (float32), state {graph.nbytes('state'):,} bytes")
    print(f"synaptic ops per token: dense {dense:,}; with events only ({rates['tokens']} tokens of {source}) "
          f"{measured:,.0f} ({pct(1 - measured / dense)} skipped, {dense / measured:.2f}x fewer)")
    print(f"wrote {Path(args.output) / 'graph.json'} and arrays.npz")
    return 0


def add_parser(sub) -> None:
    from eventllm import DEFAULT_MODEL

    b = sub.add_parser("build", help="export a model (with thresholds) as an event-driven process graph folder")
    b.add_argument("--model", default=DEFAULT_MODEL, help="model to export (default: %(default)s)")
    b.add_argument("--thresholds", help="thresholds JSON (from `eventllm calibrate`); omitted or none: θ = 0 (natural sparsity)")
    b.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL)
    b.add_argument("--data", help="text to measure event rates on (default: a built-in sample paragraph)")
    b.add_argument("--split", default="valid", choices=["all", "train", "valid", "test"], help="part of each book (default: %(default)s)")
    b.add_argument("--tokens", type=positive_int, default=64, help="tokens to measure event rates on (default: %(default)s)")
    b.add_argument("-o", "--output", required=True, help="graph folder to write (graph.json + arrays.npz)")
    b.add_argument("--force", action="store_true", help="write OUTPUT even if it is a non-empty folder that is not a graph folder")
    b.add_argument("--delta", type=non_negative_float, metavar="THETA_D", help="delta events (sigma-delta): each threshold site "
                   "sends the change of its output since what it sent, where the change exceeds THETA_D (0: every change), "
                   "and its Dense keeps its summed output (default: off)")
    b.add_argument("--delta-projections", type=projection_list, metavar="P,…", help="with --delta: only the sites of these "
                   "projections (e.g. ffn.key,att.output; default: every site)")
    precision_args(b)
    b.set_defaults(func=cmd_build)
