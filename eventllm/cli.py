"""The `eventllm` command. Each subcommand is a thin layer over the library; errors print one line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from eventllm.errors import EventLLMError


def _write_json(path: str | Path, obj) -> None:
    from eventllm.atomic import write_text
    from eventllm.distributed import is_main_process

    if not is_main_process():  # under torchrun every rank has the merged result; rank 0 writes it
        return
    write_text(path, json.dumps(obj, indent=2) + "\n")


def _check_outputs(*files, folder=None) -> None:
    """The outputs a command will write (None: not asked for), refused before the work rather than after it."""
    from eventllm.atomic import check_output

    for path in files:
        if path is not None:
            check_output(path)
    if folder is not None:
        check_output(folder, folder=True)


# --- option types: argparse itself refuses a bad number ("argument --top-p: …", exit 2) ----------------
def _number(text: str, kind: type, ok, want: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}; give {want}") from None
    if kind is float and not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; give {want}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "an integer ≥ 1")


def seed(text: str) -> int:
    return _number(text, int, lambda v: 0 <= v < 2**63, "an integer in 0 … 2^63 - 1")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, "a finite number ≥ 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "a finite number > 0")


def at_least_two(text: str) -> int:
    return _number(text, int, lambda v: v >= 2, "an integer ≥ 2")


def probability(text: str) -> float:
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def fraction(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def decay(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < 1, "a decay per step in [0, 1), e.g. 0.995 (0: off)")


def _projection_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no projection; give names such as ffn.key,att.output")
    return names


def _stop_text(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def loss_ratio(text: str) -> float:
    return _number(text, float, lambda v: v >= 1, "a ratio ≥ 1, e.g. 1.001")


def cmd_train(args) -> int:
    from eventllm.training import load_train_config, train

    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    log = train(cfg, args.output, device=args.device, resume=args.resume, progress=not args.quiet, max_seconds=args.max_seconds)
    print(f"{cfg.name}: {log['parameters']:,} parameters, {log['tokens_seen']:,} tokens, best windowed validation loss "
          f"{log['best_valid_loss_windowed']:.3f} at step {log['best_step']}; wrote {args.output}/model.safetensors")
    return 0


def _load(args, thresholds=None):
    """The model of --model on --device with --thresholds (or `thresholds`: "shipped", a file or None) applied;
    the sites a partial file lacks (--allow-partial) are listed on stderr."""
    from eventllm.pipeline import load
    from eventllm.sparsity.thresholds import describe_missing

    path = thresholds if thresholds is not None else getattr(args, "thresholds", None)
    precision = {"weight_bits": getattr(args, "weight_bits", None), "event_bits": getattr(args, "event_bits", None),
                 "method": getattr(args, "quant_method", None),
                 "projections": args.quantize.split(",") if getattr(args, "quantize", None) else None}
    loaded = load(args.model, path, getattr(args, "device", None), getattr(args, "allow_partial", False), precision)
    if loaded.missing_sites:
        print(f"{loaded.thresholds}: {describe_missing(loaded.missing_sites)}", file=sys.stderr)
    return loaded


def _tokens(loaded, data: str, split: str, max_tokens: int | None, progress: bool = False) -> list[int]:
    from eventllm.data import cached_token_stream

    ids = cached_token_stream(data, split, loaded.tokenizer, progress=progress)
    _enough_tokens(ids, max_tokens, data, split)
    return (ids[:max_tokens] if max_tokens else ids).astype("int64").tolist()


def _enough_tokens(ids, max_tokens: int | None, data: str, split: str) -> None:
    """At least 2 tokens are scored text: refuse fewer, naming --max-tokens when it is what cut the text short."""
    from eventllm.errors import DataError

    if len(ids) < 2:
        raise DataError(f"{data} (split {split}): fewer than 2 tokens of text; pass a larger text")
    if max_tokens is not None and max_tokens < 2:
        raise DataError(f"--max-tokens {max_tokens}: a text needs at least 2 tokens (one to read, one to predict); give "
                        "--max-tokens 2 or more")


def cmd_info(args) -> int:
    import platform

    from eventllm.models.registry import zoo_card, zoo_names
    from eventllm.report import format_table

    if not args.model and args.thresholds:
        from eventllm.errors import ConfigError

        raise ConfigError(f"--thresholds {args.thresholds} is applied to a model: add --model (the one it was calibrated for)")
    if not args.model:
        import torch

        print(f"eventllm {__import__('eventllm').__version__}  (Python {platform.python_version()}, torch {torch.__version__})")
        rows = []
        for name in zoo_names():
            card = zoo_card(name) or {}
            rows.append([f"zoo:{name}", card.get("arch", "?"), f"{card.get('parameters', 0):,}", card.get("valid_ppl", "?")])
        print(format_table(["model", "arch", "parameters", "valid ppl"], rows, title="Shipped models"))
        return 0
    loaded = _load(args)
    m = loaded.model
    n_params = sum(p.numel() for p in m.parameters())
    print(f"{loaded.name}: {m.arch}, {n_params:,} parameters, fingerprint {m.fingerprint()}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in m.config_dict().items()))
    print(f"tokenizer: {type(loaded.tokenizer).__name__}, {loaded.tokenizer.vocab_size} tokens")
    shapes = m.projection_shapes()
    thetas = m.get_thetas()
    rows = [[p, shapes[p][0], shapes[p][1], f"{max(thetas[(i, p)] for i in range(m.n_layer)):g}"] for p in m.PROJECTIONS]
    print(format_table(["projection", "in", "out", "max θ"], rows, title=f"Thresholded projections ({m.n_layer} layers)"))
    if loaded.card:
        c = loaded.card
        print(f"card: trained on {c['corpus']} ({c['split']}), {c['training_tokens']:,} tokens seen; "
              f"validation perplexity {c['valid_ppl']:.2f}"
              + (f" (unigram baseline {c['unigram_ppl']:.1f})" if c.get("unigram_ppl") is not None else ""))
        print(f"      training command: {c['training_command']}")
    return 0


def _task_specs(tasks: str, task_data: str) -> list[tuple[str, str | None]]:
    """'ppl,lambada,piqa=FILE' → [(name, path)]; lambada defaults to the shared copy."""
    from pathlib import Path

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
    from eventllm.errors import ConfigError
    from eventllm.evaluate.language_model import evaluate_stream, sparsity_table
    from eventllm.evaluate.tasks import run_task
    from eventllm.report import format_table, pct

    specs = _task_specs(args.tasks, args.task_data)
    _check_outputs(args.json)
    if args.data is None:  # the pg-books test split shipped inside the package
        from eventllm.data import HELDOUT_TEXT

        args.data, args.split = str(HELDOUT_TEXT), args.split or "test"
    args.split = args.split or "all"
    from eventllm.distributed import evaluate_segments, init_world

    world = init_world(args.device)  # torchrun: join the process group before the model goes to its GPU
    loaded = _load(args)
    m = loaded.model
    from eventllm.models.quantize import describe

    result = {"model": loaded.name, "thresholds": loaded.thresholds, "data": args.data, "split": args.split,
              "precision": describe(m)}
    if any(n == "ppl" for n, _ in specs):
        ids = _tokens(loaded, args.data, args.split, args.max_tokens, progress=not args.quiet)
        byte_lengths = loaded.tokenizer.token_bytes() if hasattr(loaded.tokenizer, "token_bytes") else None
        if args.segments > 1 or world.size > 1:
            result |= evaluate_segments(m, ids, args.segments, world, progress=not args.quiet, byte_lengths=byte_lengths)
        else:
            result |= evaluate_stream(m, ids, progress=not args.quiet, byte_lengths=byte_lengths)
        if args.reference:
            result |= _evaluate_reference(args, ids, world, result)
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
        _write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _evaluate_reference(args, ids, world, result: dict) -> dict:
    """The reference model (dense, θ = 0, as trained) on the same tokens: its perplexity and the increase against it."""
    import numpy as np

    from eventllm.distributed import evaluate_segments
    from eventllm.errors import ConfigError
    from eventllm.evaluate.language_model import evaluate_stream

    ref = _load(argparse.Namespace(**(vars(args) | {"model": args.reference, "weight_bits": None, "event_bits": None,
                                                     "quant_method": None, "quantize": None})), thresholds=False)
    if not np.array_equal(np.asarray(_tokens(ref, args.data, args.split, args.max_tokens)), np.asarray(ids)):
        raise ConfigError(f"--reference {args.reference} reads the text with another tokenizer than {result['model']}; "
                          "give a reference with the same tokenizer (the model it was fine-tuned from)")
    byte_lengths = ref.tokenizer.token_bytes() if hasattr(ref.tokenizer, "token_bytes") else None
    if args.segments > 1 or world.size > 1:
        r = evaluate_segments(ref.model, ids, args.segments, world, progress=not args.quiet, byte_lengths=byte_lengths)
    else:
        r = evaluate_stream(ref.model, ids, progress=not args.quiet, byte_lengths=byte_lengths)
    out = {"reference": ref.name, "ppl_reference": r["ppl"], "ppl_increase_reference": result["ppl"] / r["ppl"] - 1.0}
    if "bits_per_byte" in r:
        out["bits_per_byte_reference"] = r["bits_per_byte"]
    return out


def _device_name(model) -> str:
    """What the model runs on, for the record a thresholds file keeps (its calibration time means little without it)."""
    import os
    import platform

    import torch

    dev = next(model.parameters()).device
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def _calibrate_by_training(args, loaded, ids) -> int:
    from eventllm.errors import ConfigError
    from eventllm.report import pct
    from eventllm.sparsity.thresholds import save_thresholds
    from eventllm.sparsity.train_baseline import train_thresholds

    if args.target_sparsity is None:
        raise ConfigError("--method train learns thresholds for a sparsity: pass --target-sparsity (e.g. 0.45)")
    r = train_thresholds(loaded.model, ids, args.target_sparsity, tokens=args.tokens, context=args.context, seed=args.seed,
                         device=str(next(loaded.model.parameters()).device),
                         progress=not args.quiet)
    print(f"trained thresholds in {r.seconds:.1f} s ({r.steps} steps, target reached at step {r.steps_to_target}); "
          f"sparsity {pct(r.sparsity)} on the training windows, loss {r.loss_dense:.4f} → {r.loss_final:.4f}")
    save_thresholds(loaded.model, args.output, loaded.name, meta={"method": "training-based (snnTorch surrogate gradients)",
                    "data": args.data, "split": args.split, "target_sparsity": args.target_sparsity, "steps": r.steps,
                    "seconds": r.seconds, "device": _device_name(loaded.model)})
    print(f"wrote {args.output}")
    return 0


# options of `calibrate` that only --method finetune reads
FINETUNE_ONLY = ("output_model", "thresholds", "steps", "max_seconds", "lr", "batch_size", "check_every", "ce_weight",
                 "weight_average", "teacher", "output_dtype", "recheck_tokens", "checkpoint", "pause_after", "no_end_raise")


def _check_calibrate_args(args) -> None:
    """Conflicting or misplaced `calibrate` options, refused before anything is loaded."""
    from eventllm.errors import ConfigError

    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    if args.grad_tokens is not None and args.scores != "gradient":
        raise ConfigError("--grad-tokens sets the data of --scores gradient; drop it, or pass --scores gradient")
    if args.method != "finetune":
        given = [n for n in FINETUNE_ONLY if getattr(args, n) is not None]
        if given:
            raise ConfigError(f"{flag(given[0])} is for --method finetune; drop it or add --method finetune")
        goals = [n for n in ("max_ppl_increase", "target_sparsity", "loss_inc") if getattr(args, n) is not None]
        if len(goals) > 1:
            raise ConfigError(f"give only one of --max-ppl-increase, --target-sparsity and --loss-inc with --method {args.method} "
                              f"(got {flag(goals[0])} and {flag(goals[1])}); --method finetune takes --target-sparsity and "
                              "--max-ppl-increase together")
        return
    if args.output_model is None:
        raise ConfigError("--method finetune writes a fine-tuned model beside the thresholds: pass --output-model FT.safetensors")
    if Path(args.output_model).suffix != ".safetensors":
        raise ConfigError(f"--output-model {args.output_model}: the fine-tuned model is an eventllm .safetensors file; "
                          "give a name ending in .safetensors")
    if Path(args.output_model).resolve() == Path(args.output).resolve():
        raise ConfigError(f"-o and --output-model are the same file ({args.output}); give the thresholds JSON another name")
    if args.target_sparsity is None and args.max_ppl_increase is None:
        raise ConfigError("--method finetune needs a goal: --target-sparsity S (MAC-weighted), --max-ppl-increase B, or both")
    refused = [("--loss-inc", args.loss_inc is not None), (f"--scores {args.scores}", args.scores != "magnitude"),
               ("--weight-bits", args.weight_bits is not None), ("--event-bits", args.event_bits is not None),
               ("--quant-method", args.quant_method is not None), ("--quantize", args.quantize is not None)]
    for name, given in refused:
        if given:
            raise ConfigError(f"--method finetune trains one θ per site at full precision; drop {name}")
    if args.split in ("train", "all"):
        raise ConfigError(f"--method finetune trains on the train split and checks the bound on --split; --split {args.split} "
                          "would check it on training text: use --split valid")
    if args.recheck_tokens is not None and args.max_ppl_increase is None:
        raise ConfigError("--recheck-tokens holds the perplexity bound on fresh text: give it with --max-ppl-increase B")
    if args.pause_after is not None and args.checkpoint is None:
        raise ConfigError("--pause-after saves the run to go on later: give --checkpoint PATH with it")
    if args.checkpoint is not None:
        from eventllm.atomic import check_output

        check_output(args.checkpoint)
        if {Path(args.checkpoint).resolve()} & {Path(args.output).resolve(), Path(args.output_model).resolve()}:
            raise ConfigError(f"--checkpoint {args.checkpoint} is also an output (-o or --output-model); give it its own name")


def _calibrate_by_finetuning(args) -> int:
    import shutil

    import torch

    from eventllm.atomic import atomic_path
    from eventllm.data import cached_token_stream
    from eventllm.errors import OutputError
    from eventllm.models.checkpoints import save_eventllm
    from eventllm.report import format_table, pct
    from eventllm.sparsity.finetune import FinetunePaused, finetune, resolve_device
    from eventllm.sparsity.thresholds import save_thresholds

    device = resolve_device(args.device)
    # the start θ: a file, "none" (from the natural zeros) or, omitted, the zoo model's shipped ones (when it has them)
    loaded = _load(args, thresholds="shipped" if args.thresholds is None else args.thresholds)
    m = loaded.model
    if args.head:
        m.set_head_threshold(True)
    out_model = Path(args.output_model)
    # the fine-tuned model is loaded with the tokenizer that lies beside it (as for any model file)
    tok_src = getattr(loaded.tokenizer, "path", None)
    tok_dst = out_model.parent / "tokenizer.json"
    if tok_src is not None and tok_dst.exists() and tok_dst.read_bytes() != Path(tok_src).read_bytes():
        raise OutputError(f"{tok_dst} is another tokenizer than {loaded.name}'s, and the fine-tuned model needs its own beside "
                          "it; write --output-model into another folder")
    teacher, reference = _teacher(args, loaded, device)
    check_ids = _tokens(loaded, args.data, args.split, None)
    train_ids = cached_token_stream(args.data, "train", loaded.tokenizer, progress=not args.quiet)
    # the recheck's text beside the check stream, taken now: a split without any is refused before the run, not after it
    fresh = _recheck_stream(check_ids, args) if args.recheck_tokens else None
    print(f"start: {loaded.thresholds or 'θ = 0 (natural sparsity)'}; training on {args.data} [train], {len(train_ids):,} tokens; "
          f"checking on [{args.split}]; device {device}")
    given = {k: getattr(args, k) for k in ("steps", "max_seconds", "lr", "batch_size", "context", "check_every", "ce_weight",
                                           "weight_average")}
    try:
        res = finetune(m, train_ids, check_ids, target_sparsity=args.target_sparsity, max_ppl_increase=args.max_ppl_increase,
                       check_tokens=args.check_tokens, safety=args.safety, seed=args.seed, device=str(device),
                       progress=not args.quiet, teacher=teacher, checkpoint=args.checkpoint, pause_after_seconds=args.pause_after,
                       raise_end=not args.no_end_raise,
                       **{k: v for k, v in given.items() if v is not None})  # the others: finetune's defaults
    except FinetunePaused as p:
        print(f"paused at step {p.step} after {p.seconds:.1f} s of the run; saved in {p.checkpoint}. Run the same command "
              "again to go on (nothing else is written until the run ends)")
        return 0
    rows = [[str(i)] + [f"{res.thetas[(i, p)]:.3g}" for p in m.PROJECTIONS] for i in range(m.n_layer)]
    print(format_table(["layer", *m.PROJECTIONS], rows, title="Thresholds θ of the fine-tuned model"))
    if m.head_threshold:
        print(f"head: θ {res.thetas[(m.n_layer, m.HEAD_SITE)]:.3g}")
    reached = (f"; target {pct(args.target_sparsity)} reached on the check stream after {res.seconds_to_target:.1f} s "
               f"(step {res.steps_to_target})" if res.seconds_to_target is not None else
               f"; target {pct(args.target_sparsity)} not reached" if args.target_sparsity is not None else "")
    kept = ("kept the start: no fine-tuned state within the bound went further" if res.kept_step == 0 else
            f"kept the state of step {res.kept_step}" + (f", its θ scaled by {res.end_scale:.3f} to be within the bound"
                                                         if res.end_scale < 1 else
                                                         f", its θ raised × {res.end_scale:.3f} within the bound"
                                                         if res.end_scale > 1 else ""))
    print(f"\nfine-tuned {res.steps} steps ({res.tokens:,} tokens) in {res.seconds:.1f} s on {res.device}{reached}; {kept}")
    bound = ("" if res.within_bound is None else " (within the bound)" if res.within_bound else
             f" (NOT within {pct(args.safety * args.max_ppl_increase)}: no state was; try a longer run or a lower --lr)")
    print(f"on the check stream ({res.check_tokens:,} tokens of [{args.split}]): perplexity {100 * res.ppl_increase:+.2f}% vs "
          f"the dense {reference}{bound}; sparsity MAC-weighted {pct(res.natural_mac_weighted)} natural, "
          f"{pct(res.start_mac_weighted)} at the start → {pct(res.mac_weighted)}, mean over sites {pct(res.natural_sparsity)} → "
          f"{pct(res.sparsity)}")
    meta = res.meta() | {"finetuned_from": loaded.name, "teacher": reference, "start_thresholds": loaded.thresholds, "data": args.data,
                         "split": args.split, "target_sparsity": args.target_sparsity, "max_ppl_increase": args.max_ppl_increase}
    if args.output_dtype == "bfloat16":
        meta["rounded"] = _round_to_bf16(m, check_ids, args, res, reference)
    if fresh is not None:
        meta["recheck"] = _recheck(m, teacher if teacher is not None else _load(args, thresholds=False).model, fresh, args,
                                   device, reference)
    if tok_src is not None and not tok_dst.exists():
        with atomic_path(tok_dst) as tmp:
            shutil.copy(tok_src, tmp)
    m.to("cpu")
    save_eventllm(m, out_model, dtype=torch.bfloat16 if args.output_dtype == "bfloat16" else torch.float32,
                  extra={"finetuned_from": loaded.name})
    save_thresholds(m, args.output, str(out_model), meta=meta)
    print(f"wrote {out_model}" + (f" (tokenizer beside it: {tok_dst})" if tok_src is not None else "") + f" and {args.output}")
    if args.checkpoint is not None and Path(args.checkpoint).exists():
        Path(args.checkpoint).unlink()  # the run has ended and its outputs are written
        print(f"removed the checkpoint {args.checkpoint} (the run has ended)")
    print(f"evaluate it: eventllm evaluate --model {out_model} --thresholds {args.output} --data {args.data} --split test "
          f"(its ppl increase there is against the fine-tuned model at θ = 0; against {reference}: evaluate that too)")
    return 0


def _round_to_bf16(m, check_ids, args, res, reference) -> dict:
    """Round the fine-tuned weights to bfloat16 (half the file: what the zoo ships and what the device brings back)
    and measure the rounded model on the same check stream, so that the thresholds file (tied to the weights'
    fingerprint) and its figures are those of the weights written."""
    import math

    import torch

    from eventllm.report import pct
    from eventllm.sparsity.calibrate import check_stream
    from eventllm.sparsity.finetune import _check

    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))
    nll, rep = _check(m, check_stream(check_ids, args.check_tokens, args.seed))
    inc = math.exp(nll - res.loss_dense) - 1
    print(f"rounded to bfloat16: perplexity {100 * inc:+.2f}% vs the dense {reference} on the check stream"
          f"{' (over the bound)' if args.max_ppl_increase is not None and inc > args.safety * args.max_ppl_increase else ''}"
          f"; sparsity MAC-weighted {pct(rep.mac_skipped())}")
    return {"dtype": "bfloat16", "ppl_increase_on_check_vs_teacher": inc, "mac_weighted_sparsity_on_check": rep.mac_skipped(),
            "sparsity_on_check": rep.average()}


def _recheck_stream(check_ids, args):
    """The --recheck-tokens tokens of --split beside the check stream: the text before it and after it, as one stream
    (refused before the run when there is none)."""
    import torch

    from eventllm.errors import DataError
    from eventllm.sparsity.calibrate import check_stream_start

    ids = torch.as_tensor(check_ids, dtype=torch.long)
    start, n = check_stream_start(ids.numel(), args.check_tokens, args.seed)
    fresh = torch.cat([ids[:start], ids[start + n:]])[: args.recheck_tokens]
    if fresh.numel() < 2:
        raise DataError(f"--recheck-tokens: [{args.split}] of {args.data} has no tokens beside the {n:,}-token check stream; "
                        "give fewer --check-tokens or a larger split")
    return fresh


def _recheck(m, dense, fresh, args, device, reference) -> dict:
    """The end state measured on `fresh`, --recheck-tokens more tokens of --split beside the check stream (the run kept
    the best of the states that passed there, so that stream's noise flatters it): where the increase over the dense
    reference is above SAFETY × the bound, θ is scaled down by the largest common factor within it there."""
    from eventllm.report import pct
    from eventllm.sparsity.calibrate import largest_scale_within
    from eventllm.sparsity.finetune import _check

    m.to(device)
    dense.to(device)
    try:
        dense_nll = _check(dense, fresh)[0]
        theta = m.get_thetas()
        seen = {}

        def increase(s: float) -> float:
            m.set_thetas({k: v * s for k, v in theta.items()})
            nll, rep = _check(m, fresh)
            seen[s] = (math.exp(nll - dense_nll) - 1.0, rep)
            return seen[s][0]

        limit = args.safety * args.max_ppl_increase
        scale = largest_scale_within(increase, limit, cap=1.0)
        if scale not in seen:  # 0: no scale passed, and θ = 0 is measured only now
            increase(scale)
        m.set_thetas({k: v * scale for k, v in theta.items()})
    finally:
        m.to("cpu")
        dense.to("cpu")
    inc, rep = seen[scale]
    first = seen[1.0][0]
    within = inc <= limit  # at θ = 0 the fine-tuned weights themselves may be over it
    print(f"recheck on {fresh.numel():,} more tokens of [{args.split}] (beside the check stream): perplexity "
          f"{100 * first:+.2f}% vs the dense {reference}" + ("; within the bound" if scale == 1.0 else
          f"; θ scaled by {scale:.3f} to {100 * inc:+.2f}% " + (f"(within {pct(limit)})" if within else
          f"(NOT within {pct(limit)} even at θ = 0: the fine-tuned weights are over it; try a lower --lr)")) +
          f"; sparsity MAC-weighted {pct(rep.mac_skipped())}")
    return {"tokens": int(fresh.numel()), "scale": scale, "ppl_increase_vs_teacher_before": first,
            "ppl_increase_vs_teacher": inc, "within_bound": within, "mac_weighted_sparsity": rep.mac_skipped(),
            "sparsity": rep.average(), "runs": len(seen)}


def _teacher(args, loaded, device):
    """The dense model of --teacher (θ = 0, frozen) and its name, or (None, the student's name) without it: a fine-tuned
    model fine-tuned again is held to the original model's predictions and perplexity, not to its own."""
    if args.teacher is None:
        return None, loaded.name
    from eventllm.errors import ConfigError
    from eventllm.pipeline import load
    from eventllm.tokenizer import tokenizer_id

    t = load(args.teacher, None, str(device))
    if t.model.config.vocab_size != loaded.model.config.vocab_size or tokenizer_id(t.tokenizer) != tokenizer_id(loaded.tokenizer):
        raise ConfigError(f"--teacher {args.teacher} reads text with another tokenizer than {loaded.name} "
                          f"({t.model.config.vocab_size} vs {loaded.model.config.vocab_size} tokens, or other merges); "
                          "distil from a model with the student's tokenizer (the one it was fine-tuned from)")
    t.model.set_thetas(0.0)
    for p in t.model.parameters():
        p.requires_grad_(False)
    return t.model, t.name


def cmd_calibrate(args) -> int:
    from eventllm.report import format_table, pct
    from eventllm.sparsity.calibrate import calibrate
    from eventllm.sparsity.thresholds import save_thresholds

    _check_calibrate_args(args)
    _check_outputs(args.output, args.output_model)
    if args.method == "finetune":
        return _calibrate_by_finetuning(args)
    args.context = args.context or 256
    loaded = _load(args)
    if args.head:
        loaded.model.set_head_threshold(True)
    ids = _tokens(loaded, args.data, args.split, None)
    if args.method == "train":
        if args.scores != "magnitude":
            from eventllm.errors import ConfigError

            raise ConfigError("--method train learns one θ per site; drop --scores (per-neuron thresholds come from the search)")
        if args.search != "paper":
            from eventllm.errors import ConfigError

            raise ConfigError(f"--method train learns its thresholds; drop --search {args.search} (a training-free search)")
        return _calibrate_by_training(args, loaded, ids)
    res = calibrate(loaded.model, ids, max_ppl_increase=args.max_ppl_increase, target_sparsity=args.target_sparsity,
                    loss_inc=args.loss_inc, tokens=args.tokens, context=args.context, step=args.step, seed=args.seed,
                    check_tokens=args.check_tokens, safety=args.safety, progress=not args.quiet, scores=args.scores,
                    search=args.search, levels=args.levels, **({"grad_tokens": args.grad_tokens} if args.grad_tokens else {}))
    m = loaded.model
    greedy = res.search == "greedy"  # its kept fractions are the calibration tokens', on a finer grid
    rows = [[str(i)] + [f"{res.thetas[(i, p)]:.3g} ({res.keeps[(i, p)]:.{2 if greedy else 1}f})" for p in m.PROJECTIONS]
            for i in range(m.n_layer)]
    title = ("Thresholds θ (kept fraction of the calibration tokens, greedy allocation)" if greedy
             else "Thresholds θ (Top-K kept fraction of the search)")
    print(format_table(["layer", *m.PROJECTIONS], rows, title=title))
    if m.head_threshold:
        key = (m.n_layer, m.HEAD_SITE)
        print(f"head: θ {res.thetas[key]:.3g} (kept fraction {res.keeps[key]:.1f})")
    print(f"\ncalibrated on {res.tokens:,} tokens of {args.data} [{args.split}] in {res.seconds:.1f} s ({res.evaluations} loss evaluations)")
    if greedy:
        print(f"loss budget: calibration loss × {res.loss_inc ** len(res.thetas):.6f} (the per-site tolerance {res.loss_inc:.6f} "
              f"compounded), common θ scale {res.scale:.3f}")
    else:
        print(f"per-site loss tolerance {res.loss_inc:.6f}, common θ scale {res.scale:.3f}")
    print(f"on the check stream: perplexity {100 * res.ppl_increase:+.2f}%, sparsity MAC-weighted {pct(res.natural_mac_weighted)} → "
          f"{pct(res.mac_weighted)}, mean over sites {pct(res.natural_sparsity)} → {pct(res.sparsity)}")
    from eventllm.models.quantize import describe

    meta = res.meta() | {"precision": describe(m), "data": args.data, "split": args.split, "seed": args.seed, "max_ppl_increase": args.max_ppl_increase, "safety": args.safety, "check_tokens": args.check_tokens,
                         "target_sparsity": args.target_sparsity, "device": _device_name(m)} | ({"levels": args.levels} if greedy else {})
    save_thresholds(m, args.output, loaded.name, meta=meta)
    print(f"wrote {args.output}")
    return 0


def cmd_build(args) -> int:
    from pathlib import Path

    from eventllm import pipeline
    from eventllm.atomic import atomic_folder
    from eventllm.data import SAMPLE_TEXT
    from eventllm.process.graph import check_graph_output
    from eventllm.report import format_table, pct

    check_graph_output(args.output, args.force)
    if args.delta_projections and args.delta is None:
        from eventllm.errors import ConfigError

        raise ConfigError("--delta-projections selects the sites of --delta: give --delta THETA_D too")
    loaded = _load(args)
    if args.data:
        ids = _tokens(loaded, args.data, args.split, args.tokens)
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


def cmd_map(args) -> int:
    from pathlib import Path

    from eventllm.process.graph import ProcessGraph
    from eventllm.report import format_table
    from mapping import map_graph

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
    _check_outputs(args.output, None if args.no_heatmap else args.heatmap or Path(args.output).with_suffix(".png"))
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


def _lava_blocks(args) -> None:
    """--lava-blocks only with --backend lava (default there: hierarchical)."""
    from eventllm.errors import ConfigError

    if args.lava_blocks is not None and args.backend != "lava":
        raise ConfigError(f"--lava-blocks {args.lava_blocks} chooses how the graph runs on lava-nc; drop it, or add --backend lava")
    args.lava_blocks = args.lava_blocks or "hierarchical"


def cmd_simulate(args) -> int:
    from pathlib import Path

    from eventllm.errors import ConfigError
    from eventllm.process.graph import ProcessGraph
    from mapping import Mapping
    from sim.costs import load_costs, topology_note
    from sim.report import simulate

    given = [f for f, v in (("--data", args.data), ("--token-ids", args.token_ids), ("--prompt", args.prompt)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{given[0]} and {given[1]} both give the tokens to run; pass only one of --data, --token-ids and --prompt")
    if args.segments > 1 and args.data is None:
        raise ConfigError("--segments cuts the text of --data; drop it, or pass --data")
    _lava_blocks(args)
    _check_outputs(args.json, folder=args.report)
    graph = ProcessGraph.load(args.graph)
    mapping = Mapping.load(args.mapping, graph)
    costs = load_costs(args.costs or mapping.topology.name)
    if note := topology_note(costs, mapping.topology.name):
        print(note, file=sys.stderr)
    if args.backend == "lava" and graph.delta_sites():
        raise ConfigError("delta events are not bridged to Lava yet; drop --backend lava, or build the graph without --delta")
    if args.data:
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
    if args.engine == "trace":
        from eventllm.pipeline import simulate_segments

        runs = simulate_segments(graph, mapping, costs, tokens, modes, 1, None, "trace", _graph_model(args, graph),
                                 progress=not args.quiet)
    else:
        runs = simulate(graph, mapping, costs, tokens, modes, progress=not args.quiet)
    from sim.report import settings

    info = {"graph": str(args.graph), "model": graph.meta.get("model") or args.graph, "mapping": str(args.mapping),
            "topology": mapping.topology.name, "costs": costs.name, "settings": settings(graph),
            "prompt": args.prompt, "token_ids": tokens}
    if args.backend == "lava":
        info["lava"] = _simulate_on_lava(args, runs["thresholded"], tokens)
    return _simulate_report(args, runs, info, mapping, len(tokens))


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
    from eventllm.models.registry import load_model

    spec = args.model or graph.meta.get("model")
    if not spec:
        raise ConfigError(f"{args.graph} does not name its model; pass --model (the model it was built from)")
    model = load_model(spec).model
    if any(q.kind == "threshold" and q.attrs.get("projection") == "head" for q in graph):
        model.set_head_threshold(True)
    from eventllm.models.quantize import apply_precision

    apply_precision(model, graph.meta.get("precision"))  # the masks of the low-bit model the graph holds
    from eventllm.masks import check_model_matches, site_key

    check_model_matches(model, graph)  # before its sites are looked up
    per_neuron = [q for q in graph if q.kind == "threshold" and "score_theta" in q.attrs]
    if per_neuron:
        # the graph's per-neuron thresholds as they are (whatever scores made them), bit for bit
        # (pipeline.simulate_segments checks the vectors are the graph's)
        model.set_theta_vectors({site_key(graph, q): q.vars["theta"].value for q in per_neuron},
                                {site_key(graph, q): q.attrs["score_theta"] for q in per_neuron})
    if args.device:
        from eventllm.models.device import torch_device

        model.to(torch_device(args.device))
    return model


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
    _enough_tokens(ids, args.max_tokens, args.data, args.split)
    ids = (ids[: args.max_tokens] if args.max_tokens else ids).astype("int64").tolist()
    modes = ("thresholded", "natural", "dense") if args.compare_dense else ("thresholded",)
    runs = simulate_segments(graph, mapping, costs, ids, modes, args.segments, world, engine, model, progress=not args.quiet)
    from sim.report import settings

    info = {"graph": str(args.graph), "model": graph.meta.get("model") or args.graph, "mapping": str(args.mapping),
            "topology": mapping.topology.name, "costs": costs.name, "settings": settings(graph), "data": args.data, "split": args.split,
            "engine": engine, "segments": args.segments, "prompt": None, "token_ids": None}
    return _simulate_report(args, runs, info, mapping, len(ids))


def _simulate_report(args, runs: dict, info: dict, mapping, n_tokens: int) -> int:
    from pathlib import Path

    from eventllm.distributed import is_main_process
    from eventllm.report import format_table, pct
    from sim.report import plots, results_json

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
        _write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.report and is_main_process():
        from eventllm.atomic import atomic_folder

        with atomic_folder(args.report, merge=True) as folder:  # the report's files appear together
            _write_json(folder / "simulation.json", result)
            written = plots(runs, mapping, folder, model)
        for path in written:
            print(f"wrote {Path(args.report) / path.name}")
    return 0


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
    _lava_blocks(args)
    if args.greedy and (args.temperature is not None or args.top_p is not None):
        raise ConfigError("--greedy decodes without sampling; drop --temperature and --top-p (or --greedy)")
    _check_outputs(args.json)
    args.device = None
    loaded = _load(args, thresholds=False if args.no_thresholds else (args.thresholds or "shipped"))
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
        from sim.costs import topology_note

        if note := topology_note(backend.costs, backend.mapping.topology.name):
            print(note, file=sys.stderr)
    if args.backend == "lava":
        where = f" (lava-nc Loihi2SimCfg, {args.lava_blocks} blocks, {backend.client.hold} steps per token)"
    print(f"{loaded.name}, thresholds: {thresholds or 'none (θ = 0)'}, backend: {args.backend}{where}", file=sys.stderr)
    live = sys.stdout.isatty() and not args.quiet

    def status(st) -> str:
        text = f"{100 * st.sparsity:.0f}% sparse"
        if st.energy_j is not None:
            text += f" · {st.energy_j * 1e6:.1f} µJ · {st.latency_s * 1e6:.0f} µs"
        return text

    shown = [0]

    def on_token(st):
        if live:  # a dim status after the cursor, erased before the next piece of text
            msg = f"  \x1b[2m⟨{status(st)}⟩\x1b[0m"
            sys.stdout.write(msg + f"\x1b[{len(status(st)) + 4}D")
            sys.stdout.flush()
            shown[0] = 1

    def run_turn(prompt: str) -> None:
        if not args.prompt:
            sys.stdout.write("model> ")
        sys.stdout.write(prompt if args.prompt else "")
        for piece in session.reply(prompt, on_token):
            if shown[0]:
                sys.stdout.write("\x1b[K")
            sys.stdout.write(piece)
            sys.stdout.flush()
        if shown[0]:
            sys.stdout.write("\x1b[K")
        sys.stdout.write("\n")
        st = session.stats[-1] if session.stats else None
        if st is not None and not args.quiet:
            n = len(session.turns[-1].reply_ids)
            print(f"[{n} tokens · last token {status(st)}]", file=sys.stderr)
        sys.stdout.flush()

    try:
        if args.prompt:
            run_turn(args.prompt)
        elif sys.stdin.isatty():
            print("Type a prompt and press Enter; Ctrl-D or Ctrl-C ends the session.", file=sys.stderr)
            while True:
                try:
                    line = input("you> ")
                except EOFError:
                    print()
                    break
                if line.strip():
                    run_turn(line)
        else:
            for line in sys.stdin:
                if line.strip():
                    sys.stdout.write(f"you> {line.rstrip()}\n")
                    run_turn(line.rstrip("\n"))
    except KeyboardInterrupt:
        sys.stdout.write("\x1b[K\n(interrupted)\n" if live else "\n(interrupted)\n")
    finally:
        if hasattr(backend, "close"):
            backend.close()
    summary = session.summary() | {"model": loaded.name, "thresholds": thresholds,
                                   "turns_text": [{"prompt": t.prompt, "reply": t.reply or loaded.tokenizer.decode(t.reply_ids)} for t in session.turns]}
    print(_session_summary_table(summary))
    if args.json:
        _write_json(args.json, summary)
        print(f"wrote {args.json}")
    sys.stdout.flush()
    return 0


def cmd_demo(args) -> int:
    from eventllm.demo import run_demo
    from eventllm.errors import ConfigError

    if not args.prompt.strip():
        raise ConfigError("--prompt is empty; give some text, or leave --prompt out for the demo's own prompt")
    _check_outputs(folder=args.output)
    run_demo(args.output, args.model, args.baseline, args.data, args.tokens, args.prompt, args.max_tokens,
             progress=not args.quiet, seed=args.seed)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`eventllm generate: error: argument --top-p: …`), like the library's errors."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


SIMULATE_PROMPT = "It was a bright cold day in April, and the clocks were striking thirteen."
LAVA_BLOCKS = ("with --backend lava: hierarchical (a Lava process per process of the graph, a hierarchical process per "
               "layer) or fused (each layer one Lava process running the layer's process models: much faster) (default: hierarchical)")
ALLOW_PARTIAL = "accept a thresholds file that lacks some sites (they run at θ = 0, and are listed)"


def _precision_args(p) -> None:
    """--weight-bits, --event-bits, --quant-method, --quantize (eventllm.models.quantize); unset: the precision the
    thresholds file was calibrated at, else the trained 16-bit model."""
    p.add_argument("--weight-bits", type=int, choices=[16, 8, 4], help="projection weights as 8- or 4-bit integers, one scale "
                   "per output channel, post-training (default: 16, or the thresholds file's)")
    p.add_argument("--event-bits", type=int, choices=[16, 8], help="8: the threshold sites send int8 events, one scale per "
                   "token (integer MACs on SENECA with 8/4-bit weights) (default: 16, or the thresholds file's)")
    p.add_argument("--quant-method", choices=["rtn", "mse"], help="rtn: round to nearest; mse: clipping searched per "
                   "channel for the least weight error (default: mse)")
    p.add_argument("--quantize", metavar="PROJ,…", help="quantise only these projections (names as in `eventllm info`, "
                   "'head' for the output head) (default: all and the head)")


def build_parser() -> argparse.ArgumentParser:
    from eventllm import DEFAULT_MODEL
    from eventllm.generate import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

    p = _Parser(prog="eventllm", description="Activation-sparse LLMs on event-driven neuromorphic hardware.")
    p.add_argument("--version", action="version", version=f"eventllm {__import__('eventllm').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from eventllm.demo import BASELINE_MODEL, DEFAULT_PROMPT, SPARSE_MODEL

    d = sub.add_parser("demo", help="the shipped sparse model against dense, natural and the paper's method on held-out text "
                       "(sparsity, perplexity, energy, latency, cores on SENECA), then text it writes on the simulator")
    d.add_argument("--model", default=SPARSE_MODEL, help="the sparse model, run with its shipped thresholds and precision "
                   "(default: %(default)s)")
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

    i = sub.add_parser("info", help="versions and shipped models, or one model's architecture and card")
    i.add_argument("--model", help="zoo:NAME, a Hugging Face folder, a BlinkDL .pth or an eventllm .safetensors")
    i.add_argument("--thresholds", help="a thresholds JSON file to apply (none: θ = 0)")
    i.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL)
    i.set_defaults(func=cmd_info)

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
    _precision_args(e)
    e.add_argument("--json", metavar="OUT", help="write the results as JSON")
    e.add_argument("--device", help="cpu or cuda (default: cpu)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("calibrate", help="thresholds from local text -> thresholds JSON: the paper's training-free search, or a "
                       "training-based comparator (θ training; sparsity-aware fine-tuning, which also writes a model)",
                       description="--method search (default): the paper's training-free search. --method train: θ learned "
                       "through snnTorch surrogate gradients, the model frozen. --method finetune: the weights fine-tuned with "
                       "scheduled θ, distilled from the dense model (KL on the logits), θ raised until --target-sparsity "
                       "(MAC-weighted) within --max-ppl-increase; writes the model (--output-model) and its thresholds (-o).")
    c.add_argument("--config", dest="recipe", metavar="RECIPE.toml", help="options from a recipe file (keys: these options without the "
                   "dashes, e.g. examples/zoo/rwkv4-small-sparse.toml); options given here override it")
    c.add_argument("--model", default=DEFAULT_MODEL, help="model to calibrate (default: %(default)s)")
    c.add_argument("--data", required=True, help="calibration text: a .txt file or a folder of them")
    c.add_argument("--split", default="valid", choices=["all", "train", "valid", "test"],
                   help="part of each book to calibrate on; evaluate on another (default: %(default)s; the zoo models "
                        "were trained on train, so thresholds set there understate the loss on unseen text). finetune "
                        "trains on the train split and checks the bound on this one")
    c.add_argument("--max-ppl-increase", type=positive_float, help="bound on the relative perplexity increase, e.g. 0.01 for 1%%")
    c.add_argument("--target-sparsity", type=fraction, help="sparsity to reach, e.g. 0.6: search and train, the mean over "
                   "projection inputs; finetune, MAC-weighted (each site weighted by its projection's in x out), and it "
                   "may be given with --max-ppl-increase")
    c.add_argument("--loss-inc", type=loss_ratio, help="search: the paper's per-site loss ratio (default 1.001 when no goal is given)")
    c.add_argument("--tokens", type=positive_int, default=2048, help="search and train: calibration tokens (default: %(default)s)")
    c.add_argument("--context", type=positive_int, help="tokens per calibration window (default: 256; finetune: 512)")
    c.add_argument("--method", default="search", choices=["search", "train", "finetune"],
                   help="search: the paper's training-free search; train: the snnTorch θ-training baseline; finetune: "
                        "sparsity-aware fine-tuning of the weights, distilled from the dense model (default: %(default)s)")
    c.add_argument("--safety", type=probability, default=0.9,
                   help="keep the check stream within SAFETY x the bound, a margin for held-out text (default: %(default)s)")
    c.add_argument("--check-tokens", type=positive_int, default=32768,
                   help="contiguous tokens the final θ scale is set and checked on (finetune: the bound) (default: %(default)s)")
    c.add_argument("--step", default="linear", choices=["linear", "exp"], help="grid of kept fractions (default: %(default)s)")
    c.add_argument("--search", default="paper", choices=["paper", "greedy"], help="paper: the published Top-K search, site "
                   "after site; greedy: θ per site where the loss buys the most MAC-weighted sparsity, priced site by site on "
                   "the same windows (eventllm.sparsity.allocate) (default: %(default)s)")
    c.add_argument("--levels", type=at_least_two, default=20, help="with --search greedy: zero fractions priced per site, "
                   "steps of 1/LEVELS of its non-zero inputs (default: %(default)s)")
    c.add_argument("--seed", type=seed, default=0, help="seed of the calibration windows (default: %(default)s)")
    c.add_argument("--scores", default="magnitude", choices=["magnitude", "wina", "gradient"], help="magnitude: one θ per "
                   "site (the paper's); per-neuron thresholds θ_i = θ / g_i, inputs ranked by |x_i|·g_i: wina g_i = ‖W[:, i]‖; "
                   "gradient g_i = √E[(∂loss/∂x_i)²] measured on --grad-tokens of the data (default: %(default)s)")
    c.add_argument("--grad-tokens", type=positive_int, help="with --scores gradient: calibration tokens the per-neuron "
                   "scales are measured on, in windows of --context (default: 8192)")
    c.add_argument("--head", action="store_true", help="also calibrate a threshold before the output head (which the paper "
                   "leaves dense); the file then turns it on wherever it is applied (RWKV)")
    _precision_args(c)
    ft = c.add_argument_group("--method finetune")
    ft.add_argument("--output-model", metavar="FT.safetensors", help="the fine-tuned model to write (eventllm safetensors, "
                    "float32; the tokenizer is written beside it); -o gets its thresholds")
    ft.add_argument("--thresholds", metavar="START.json", help="θ to start from, whose allocation across sites the schedule "
                    "keeps; 'none': from θ = 0 (default: the zoo model's shipped thresholds, else none)")
    ft.add_argument("--steps", type=positive_int, help="optimiser steps at most (default: 2000 without --max-seconds, else "
                    "until the time is up)")
    ft.add_argument("--max-seconds", type=positive_float, help="time budget from the start, the θ schedule spread over it")
    ft.add_argument("--lr", type=positive_float, help="peak learning rate of AdamW (default: 1e-4)")
    ft.add_argument("--batch-size", type=positive_int, help="windows per step (default: 16)")
    ft.add_argument("--check-every", type=positive_int, help="steps between checks of the bound on --split (default: 100)")
    ft.add_argument("--ce-weight", type=non_negative_float, help="weight of the cross-entropy on the text beside the KL to "
                    "the dense model (default: 0)")
    ft.add_argument("--teacher", metavar="MODEL", help="the dense model to distil from and to hold the bound against "
                    "(θ = 0; default: --model as given); give the original when --model is already fine-tuned")
    ft.add_argument("--weight-average", type=decay, metavar="DECAY", help="checks measure, and the run keeps, an exponential moving average "
                    "of the weights with this decay per step (Polyak averaging; quieter than the iterate at a high "
                    "--lr), e.g. 0.995 (default: 0, off)")
    ft.add_argument("--recheck-tokens", type=positive_int, metavar="N", help="after the run, measure the end state on N more "
                    "tokens of --split beside the check stream and scale θ down until it is within SAFETY × the bound there "
                    "(the run keeps the best state that passed on the check stream, whose noise then flatters it; "
                    "needs --max-ppl-increase; default: off)")
    ft.add_argument("--no-end-raise", action="store_const", const=True, help="keep the end state's θ as trained; by default a "
                    "run that ends within the bound short of --target-sparsity has its θ raised by the largest common factor (up to 1.25) "
                    "within SAFETY × the bound on the check stream (a few check runs)")
    ft.add_argument("--checkpoint", metavar="RUN.pt", help="where the run saves itself when it pauses (--pause-after); "
                    "when the file exists the run goes on from it (same model, data and options, checked): one run in "
                    "several calls, e.g. longer than a machine's per-command limit; removed when the run ends")
    ft.add_argument("--pause-after", type=positive_float, metavar="SECONDS", help="pause after SECONDS of this call and save "
                    "the run to --checkpoint (a --max-seconds budget counts the run's time over all its calls)")
    ft.add_argument("--output-dtype", choices=("float32", "bfloat16"), help="weights of --output-model: float32 (default) "
                    "or bfloat16 (half the file, as the zoo ships; the rounded model is measured on the check stream again "
                    "and the thresholds file is tied to it)")
    c.add_argument("-o", "--output", required=True, help="thresholds JSON to write")
    c.add_argument("--device", help="cpu or cuda (default: cpu; finetune: cuda when there is one)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_calibrate)

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
    b.add_argument("--delta-projections", type=_projection_list, metavar="P,…", help="with --delta: only the sites of these "
                   "projections (e.g. ffn.key,att.output; default: every site)")
    _precision_args(b)
    b.set_defaults(func=cmd_build)

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
    sm.add_argument("--backend", default="sim", choices=["sim", "lava"], help="lava: also run the prompt on lava-nc "
                    "(.venv-lava) and check its logits and per-port event counts against the simulator's (default: %(default)s)")
    sm.add_argument("--lava-blocks", choices=["hierarchical", "fused"], help=LAVA_BLOCKS)
    sm.add_argument("--json", metavar="OUT", help="write the results as JSON")
    sm.add_argument("--report", metavar="DIR", help="write simulation.json and plots into DIR")
    sm.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sm.set_defaults(func=cmd_simulate)

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
    g.add_argument("--stop", type=_stop_text, metavar="TEXT", help="end a reply where TEXT appears in it (\\n and \\t are "
                   "line break and tab; '' : never). Default: a blank line in the interactive session, none for --prompt and "
                   "prompts piped on standard input")
    g.add_argument("--temperature", type=non_negative_float, help=f"sampling temperature; 0 for greedy decoding (default: {DEFAULT_TEMPERATURE})")
    g.add_argument("--top-p", type=probability, help=f"nucleus sampling mass (default: {DEFAULT_TOP_P})")
    g.add_argument("--greedy", action="store_true", help="greedy decoding (same as --temperature 0)")
    g.add_argument("--seed", type=seed, default=1, help="sampling seed (default: %(default)s)")
    _precision_args(g)
    g.add_argument("--json", metavar="OUT", help="write the session summary and texts as JSON")
    g.add_argument("-q", "--quiet", action="store_true", help="no live status line")
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="train a model from a TOML config (the zoo models' recipe)")
    t.add_argument("config", help="training config (see examples/zoo/*.toml)")
    t.add_argument("-o", "--output", required=True, help="output folder (model.safetensors, tokenizer.json, train_log.json)")
    t.add_argument("--steps", type=positive_int, help="override the number of optimiser steps")
    t.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    t.add_argument("--max-seconds", type=positive_float, help="stop early after this much training time")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    return p


def _config_argv(parser: argparse.ArgumentParser, command: str, path: str) -> list[str]:
    """A recipe file's settings as command-line options of `command` (keys are its long options without the dashes),
    so that argparse validates them as it validates the command line, which comes after them and wins."""
    from eventllm.config import read_toml
    from eventllm.errors import ConfigError

    sub = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    known = {s for a in sub._actions for s in a.option_strings if s.startswith("--")} - {"--config", "--help"}
    argv: list[str] = []
    for key, value in read_toml(path, "recipe").items():
        opt = "--" + key.replace("_", "-")
        if opt not in known or isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: {key!r} is not an option of `eventllm {command}`; the keys are its long options "
                              f"without the dashes (see `eventllm {command} --help`)")
        if value is True:
            argv.append(opt)
        elif value is not False:
            argv += [opt, str(value)]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "recipe", None):
            try:
                recipe = _config_argv(parser, args.command, args.recipe)
            except EventLLMError as e:
                print(f"eventllm {args.command}: error: {e}", file=sys.stderr)
                return 2
            rest = argv[argv.index(args.command) + 1:]
            args = parser.parse_args([args.command, *recipe, *rest])
    except KeyboardInterrupt:
        print("eventllm: interrupted", file=sys.stderr)
        return 130
    from eventllm.distributed import is_main_process

    if not is_main_process():  # under torchrun only rank 0 prints
        import os

        sys.stdout = open(os.devnull, "w")
        if hasattr(args, "quiet"):
            args.quiet = True
    try:
        return args.func(args)
    except EventLLMError as e:
        print(f"eventllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eventllm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
