"""`eventllm generate`: one prompt, piped prompts or an interactive session, with live energy figures."""

from __future__ import annotations

import sys

from eventllm.cli.common import (
    ALLOW_PARTIAL, LAVA_BLOCKS, check_outputs, lava_blocks, load_model_args, non_negative_float, positive_int,
    precision_args, probability, seed, stop_text, write_json,
)


def _session_summary_table(summary: dict) -> str:
    from eventllm.report import format_table, pct

    rows = [["backend", summary["backend"]], ["turns", summary["turns"]],
            ["tokens processed (prompt + generated)", summary["tokens"]], ["tokens generated", summary["generated_tokens"]],
            ["tokens/s (wall clock)", f"{summary['tokens_per_s']:.1f}"], ["activation sparsity", pct(summary["sparsity"])],
            ["repeated 4-grams in the replies", pct(summary["repeated_4gram_share"])]]
    if "energy_per_token_j" in summary:
        rows += [["energy per token (simulated)", f"{summary['energy_per_token_j'] * 1e6:.2f} µJ"],
                 ["latency per token (simulated)", f"{summary['latency_per_token_s'] * 1e6:.1f} µs"],
                 ["dense ÷ sparse energy", f"{summary['energy_ratio']:.2f}x"],
                 ["dense ÷ sparse latency", f"{summary['latency_ratio']:.2f}x"]]
    return format_table(["session", "value"], rows)


def cmd_generate(args) -> int:
    from eventllm.generate import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
    from eventllm.generate.backends import make_backend
    from eventllm.generate.sampling import Sampling
    from eventllm.generate.session import Session
    from eventllm.errors import ConfigError

    if args.prompt is not None and not args.prompt.strip():
        raise ConfigError("--prompt is empty; give some text, or leave --prompt out for an interactive session")
    if not args.prompt and sys.stdin is None:
        raise ConfigError("no --prompt and no standard input (it is closed); pass --prompt TEXT or pipe prompts in, one per line")
    if args.thresholds and args.no_thresholds:
        raise ConfigError(f"--thresholds {args.thresholds} and --no-thresholds contradict each other; drop one of them")
    if args.costs and args.backend != "sim":
        raise ConfigError(f"--costs prices the simulator's events; drop it with --backend {args.backend}, or use --backend sim")
    if args.topology is not None and args.backend != "sim":
        raise ConfigError(f"--topology is where the simulator maps the model; drop it with --backend {args.backend}, or use "
                          "--backend sim")
    args.topology = args.topology or "seneca"
    lava_blocks(args)
    if args.greedy and (args.temperature is not None or args.top_p is not None):
        raise ConfigError("--greedy decodes without sampling; drop --temperature and --top-p (or --greedy)")
    check_outputs(args.json)
    args.device = None
    loaded = load_model_args(args, thresholds=False if args.no_thresholds else (args.thresholds or "shipped"))
    thresholds = loaded.thresholds
    backend = make_backend(args.backend, loaded.model, args.topology, args.costs, loaded.name, args.lava_blocks)
    sampling = Sampling.greedy() if args.greedy else Sampling(DEFAULT_TEMPERATURE if args.temperature is None else args.temperature,
                                                              DEFAULT_TOP_P if args.top_p is None else args.top_p, args.seed)
    # --max-tokens tokens per prompt, ending early only at the end-of-text token (and --stop); the interactive session
    # ends a reply at a blank line unless --stop says otherwise
    interactive = not args.prompt and sys.stdin.isatty()
    stop = args.stop if args.stop is not None else ("\n\n" if interactive else None)
    session = Session(backend, loaded.tokenizer, sampling, args.max_tokens, stop=stop)
    where = f" on {backend.mapping.topology.name} ({backend.mapping.cores_used} cores)" if args.backend == "sim" else ""
    if args.backend == "sim":
        from eventllm.pipeline import topology_note

        if note := topology_note(backend.costs, backend.mapping.topology.name):
            print(note, file=sys.stderr)
    if args.backend == "lava":
        where = f" (lava-nc Loihi2SimCfg, {args.lava_blocks} blocks, {backend.client.hold} steps per token)"
    print(f"{loaded.name}, thresholds: {thresholds or 'none (θ = 0)'}, backend: {args.backend}{where}", file=sys.stderr)
    from eventllm.generate.terminal import Terminal

    try:
        Terminal(session, args.quiet).run(args.prompt)
    finally:
        if hasattr(backend, "close"):
            backend.close()
    summary = session.summary() | {"model": loaded.name, "thresholds": thresholds,
                                   "turns_text": [{"prompt": t.prompt, "reply": t.reply or loaded.tokenizer.decode(t.reply_ids)} for t in session.turns]}
    print(_session_summary_table(summary))
    if args.json:
        write_json(args.json, summary)
        print(f"wrote {args.json}")
    sys.stdout.flush()
    return 0


def add_parser(sub) -> None:
    from eventllm import DEFAULT_MODEL
    from eventllm.generate import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

    g = sub.add_parser("generate", help="generate text (one prompt, piped prompts or an interactive session) with live energy figures")
    g.add_argument("--model", default=DEFAULT_MODEL, help="model (default: %(default)s)")
    g.add_argument("--thresholds", help="thresholds JSON (default: the zoo model's shipped calibrated thresholds; none: θ = 0, as --no-thresholds)")
    g.add_argument("--no-thresholds", action="store_true", help="run with θ = 0 (natural sparsity)")
    g.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL)
    g.add_argument("--backend", default="sim", choices=["sim", "torch", "lava"],
                   help="event-driven simulator, torch, or the graph on lava-nc (Loihi2SimCfg, .venv-lava) (default: %(default)s)")
    g.add_argument("--lava-blocks", choices=["hierarchical", "fused"], help=LAVA_BLOCKS)
    g.add_argument("--topology", help="topology for the sim backend (default: seneca)")
    g.add_argument("--costs", help="cost preset or TOML for the sim backend (default: the topology's preset)")
    g.add_argument("--prompt", help="one prompt; without it: an interactive session (or one prompt per line on stdin)")
    g.add_argument("--max-tokens", type=positive_int, default=64, help="tokens to generate per prompt; a reply ends earlier only "
                   "at the end-of-text token or --stop (default: %(default)s)")
    g.add_argument("--stop", type=stop_text, metavar="TEXT", help="end a reply where TEXT appears in it (\\n and \\t are "
                   "line break and tab; '' : never). Default: a blank line in the interactive session, none for --prompt and "
                   "prompts piped on standard input")
    g.add_argument("--temperature", type=non_negative_float, help=f"sampling temperature; 0 for greedy decoding (default: {DEFAULT_TEMPERATURE})")
    g.add_argument("--top-p", type=probability, help=f"nucleus sampling mass (default: {DEFAULT_TOP_P})")
    g.add_argument("--greedy", action="store_true", help="greedy decoding (same as --temperature 0)")
    g.add_argument("--seed", type=seed, default=1, help="sampling seed (default: %(default)s)")
    precision_args(g)
    g.add_argument("--json", metavar="OUT", help="write the session summary and texts as JSON")
    g.add_argument("-q", "--quiet", action="store_true", help="no live status line")
    g.set_defaults(func=cmd_generate)
