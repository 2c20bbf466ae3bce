"""`eventllm evaluate`: perplexity, bits per byte, sparsity and zero-shot tasks on held-out text."""

from __future__ import annotations


from eventllm.cli.common import (
    ALLOW_PARTIAL, check_outputs, load_model_args, positive_int, precision_args, read_tokens, write_json,
)


def _task_specs(tasks: str, task_data: str) -> list[tuple[str, str | None]]:
    """'ppl,lambada,piqa=FILE' → [(name, path)]; lambada defaults to the shared copy."""

    from eventllm.errors import ConfigError
    from eventllm.evaluate.tasks import DEFAULT_FILES, TASKS, default_task_file

    out = []
    for spec in [t.strip() for t in tasks.split(",") if t.strip()]:
        name, _, path = spec.partition("=")
        if name != "ppl" and name not in TASKS:
            raise ConfigError(f"unknown task {name!r}; known: ppl, {', '.join(TASKS)} (give a file as NAME=PATH)")
        if name not in ("ppl",) and not path:
            if name not in DEFAULT_FILES:
                raise ConfigError(f"task {name} needs its JSONL file: --tasks {name}=PATH (none ships with eventllm)")
            path = str(default_task_file(name, task_data))
        out.append((name, path or None))
    if not out:
        raise ConfigError("--tasks is empty; e.g. --tasks ppl,lambada")
    return out


def cmd_evaluate(args) -> int:
    from eventllm.evaluate.language_model import sparsity_table
    from eventllm.evaluate.tasks import run_task
    from eventllm.report import format_table, pct

    specs = _task_specs(args.tasks, args.task_data)
    check_outputs(args.json)
    if args.data is None:  # the pg-books test split shipped inside the package
        from eventllm.data import HELDOUT_TEXT

        args.data, args.split = str(HELDOUT_TEXT), args.split or "test"
    args.split = args.split or "all"
    from eventllm.distributed import init_world

    world = init_world(args.device)  # torchrun: join the process group before the model goes to its GPU
    loaded = load_model_args(args)
    reference = _load_reference(args, loaded) if args.reference else None  # refused before the work, not after it
    m = loaded.model
    from eventllm.models.quantize import describe

    result = {"model": loaded.name, "thresholds": loaded.thresholds, "data": args.data, "split": args.split,
              "precision": describe(m)}
    if any(n == "ppl" for n, _ in specs):
        ids = read_tokens(loaded, args.data, args.split, args.max_tokens, progress=not args.quiet)
        result |= _score(loaded, ids, world, args)
        if reference is not None:  # the same tokens through the reference, dense
            r = _score(reference, ids, world, args)
            result |= {"reference": reference.name, "ppl_reference": r["ppl"],
                       "ppl_increase_reference": result["ppl"] / r["ppl"] - 1.0}
            if "bits_per_byte" in r:
                result["bits_per_byte_reference"] = r["bits_per_byte"]
        print(format_table(["layer", *m.PROJECTIONS], sparsity_table(result, m.PROJECTIONS),
                           title="Projection-input sparsity, natural → thresholded"))
        sp = result["sparsity"]
        print(f"\n{loaded.name} on {args.data} [{args.split}], {result['tokens']:,} tokens")
        print(f"perplexity {result['ppl']:.3f}" + (f" (dense {result['ppl_dense']:.3f}, {100 * result['ppl_increase']:+.2f}%)" if loaded.thresholds else "")
              + (f", bits per byte {result['bits_per_byte']:.4f}" if "bits_per_byte" in result else ""))
        if args.reference:
            print(f"against the reference {result['reference']} (dense, θ = 0) on the same tokens: perplexity "
                  f"{result['ppl_reference']:.3f} → {result['ppl']:.3f}, {100 * result['ppl_increase_reference']:+.2f}%")
        mw, sm = sp["mac_weighted"], sp["site_mean"]
        if sp.get("head"):
            print(f"head site (θ before the output head): natural {pct(sp['head']['natural'])}, thresholded {pct(sp['head']['thresholded'])}")
        print(f"sparsity, MAC-weighted (the paper's measure): natural {pct(mw['natural'])}, thresholded {pct(mw['thresholded'])}"
              + (f" ({mw['ratio']:.2f}x)" if mw["ratio"] else ""))
        print(f"sparsity, mean over sites: natural {pct(sm['natural'])}, thresholded {pct(sm['thresholded'])}"
              + (f" ({sm['ratio']:.2f}x)" if sm["ratio"] else ""))
    tasks = [(n, p) for n, p in specs if n != "ppl"]
    if tasks:
        result["tasks"] = {}
        thetas = m.get_thetas()
        variants = [("thresholded", thetas), ("dense", 0.0)] if loaded.thresholds else [("dense", 0.0)]
        rows = []
        for name, path in tasks:
            entry = {}
            for label, th in variants:
                m.set_thetas(th)
                entry[label] = run_task(m, loaded.tokenizer, name, path, args.limit, progress=not args.quiet)
            m.set_thetas(thetas)
            result["tasks"][name] = entry | {"file": path}
            for label, r in entry.items():
                extra = f"ppl {r['ppl']:.2f}" if "ppl" in r else f"acc_norm {pct(r['acc_norm'])}"
                rows.append([name, label, r["n"], pct(r["acc"]), extra])
        print(format_table(["task", "model", "items", "acc", ""], rows, title="\nZero-shot tasks (scored as lm-evaluation-harness)"))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _score(loaded, ids, world, args) -> dict:
    """Perplexity, bits per byte and sparsity of `loaded` on `ids`: one stream, or --segments shared among the ranks."""
    from eventllm.distributed import evaluate_segments
    from eventllm.evaluate.language_model import evaluate_stream

    tok = loaded.tokenizer
    byte_lengths = tok.token_bytes() if hasattr(tok, "token_bytes") else None
    if args.segments > 1 or world.size > 1:
        return evaluate_segments(loaded.model, ids, args.segments, world, progress=not args.quiet, byte_lengths=byte_lengths)
    return evaluate_stream(loaded.model, ids, progress=not args.quiet, byte_lengths=byte_lengths)


def _load_reference(args, loaded):
    """--reference as trained (θ = 0, full precision) on --device, refused when it reads text with another tokenizer."""
    from eventllm.errors import ConfigError
    from eventllm.pipeline import load
    from eventllm.tokenizer import tokenizer_id

    ref = load(args.reference, False, args.device)
    if tokenizer_id(ref.tokenizer) != tokenizer_id(loaded.tokenizer):
        raise ConfigError(f"--reference {args.reference} reads the text with another tokenizer than {loaded.name}; "
                          "give a reference with the same tokenizer (the model it was fine-tuned from)")
    return ref


def add_parser(sub) -> None:
    from eventllm import DEFAULT_MODEL

    e = sub.add_parser("evaluate", help="perplexity and activation sparsity (natural vs thresholded) on text")
    e.add_argument("--model", default=DEFAULT_MODEL, help="model to evaluate (default: %(default)s)")
    e.add_argument("--thresholds", help="thresholds JSON (from `eventllm calibrate`); omitted or none: dense")
    e.add_argument("--reference", metavar="MODEL", help="also evaluate MODEL dense (θ = 0, full precision) on the same tokens and "
                   "report the perplexity increase against it (e.g. zoo:rwkv4-small for a model fine-tuned from it)")
    e.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL)
    e.add_argument("--data", help="text for the ppl task: a .txt(.xz) file or a folder of them (e.g. ../shared/data/pg-books; "
                   "docs/DATA.md); default: the pg-books test split shipped inside the package")
    e.add_argument("--tasks", default="ppl", help="comma-separated: ppl, lambada, piqa=FILE, arc=FILE, hellaswag=FILE, "
                   "winogrande=FILE (default: %(default)s)")
    e.add_argument("--task-data", metavar="DIR", help="a data folder laid out as docs/DATA.md says, where lambada's file lies "
                   "(lambada/lambada_test.jsonl); default: the copy shipped inside the package")
    e.add_argument("--limit", type=positive_int, help="score only the first N items of each task")
    e.add_argument("--split", choices=["all", "train", "valid", "test"], help="part of each book (default: all; test for the "
                   "shipped text)")
    e.add_argument("--max-tokens", type=positive_int, help="evaluate only the first N tokens")
    e.add_argument("--segments", type=positive_int, default=1, help="cut the text into N contiguous segments, each from a fresh "
                   "state, merged token-weighted; under torchrun the ranks share them (default: %(default)s)")
    precision_args(e)
    e.add_argument("--json", metavar="OUT", help="write the results as JSON")
    e.add_argument("--device", help="cpu or cuda (default: cpu)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)
