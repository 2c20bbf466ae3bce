"""`eventllm demo`: the shipped sparse model against dense, natural and the paper's method, then its text."""

from __future__ import annotations

from eventllm.cli.common import check_outputs, positive_int, seed


def cmd_demo(args) -> int:
    from eventllm.demo import run_demo
    from eventllm.errors import ConfigError

    if not args.prompt.strip():
        raise ConfigError("--prompt is empty; give some text, or leave --prompt out for the demo's own prompt")
    check_outputs(folder=args.output)
    run_demo(args.output, args.model, args.baseline, args.data, args.tokens, args.prompt, args.max_tokens,
             progress=not args.quiet, seed=args.seed, thresholds=args.thresholds or "best")
    return 0


def add_parser(sub) -> None:
    from eventllm.demo import BASELINE_MODEL, DEFAULT_PROMPT, SPARSE_MODEL

    d = sub.add_parser("demo", help="the shipped sparse model against dense, natural and the paper's method on held-out text "
                       "(sparsity, perplexity, energy, latency, cores on SENECA), then text it writes on the simulator")
    d.add_argument("--model", default=SPARSE_MODEL, help="the model of eventllm's row (default: %(default)s)")
    d.add_argument("--thresholds", help="its thresholds file (default: the model's best shipped configuration: θ with the "
                   "head site and precision it was calibrated at; 'none': θ = 0)")
    d.add_argument("--baseline", default=BASELINE_MODEL, help="the dense model it was made from; its shipped thresholds are "
                   "the paper's method (default: %(default)s)")
    d.add_argument("--data", help="held-out text (its test split; docs/DATA.md); default: the pg-books test split shipped "
                   "inside the package")
    d.add_argument("--tokens", type=positive_int, default=4096, help="held-out tokens every row is measured on (default: "
                   "%(default)s)")
    d.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt the sparse model continues (default: %(default)r)")
    d.add_argument("--max-tokens", type=positive_int, default=64, help="tokens to generate (default: %(default)s)")
    d.add_argument("--seed", type=seed, default=1, help="sampling seed of the generated continuation (default: %(default)s)")
    d.add_argument("-o", "--output", default="out/demo", help="report folder (default: %(default)s)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)
