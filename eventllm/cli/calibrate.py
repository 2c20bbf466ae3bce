"""`eventllm calibrate`: thresholds from local text (the paper's search, θ training, fine-tuning)."""

from __future__ import annotations

from pathlib import Path

from eventllm.cli.common import (
    at_least_two, check_outputs, decay, device_name, fraction, load_model_args, loss_ratio, non_negative_float,
    positive_float, positive_int, precision_args, probability, read_tokens, seed,
)


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
                    "seconds": r.seconds, "device": device_name(loaded.model)})
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
    loaded = load_model_args(args, thresholds="shipped" if args.thresholds is None else args.thresholds)
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
    check_ids = read_tokens(loaded, args.data, args.split, None)
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
    rows = [[str(i)] + [f"{res.thetas[(i, p)]:.3g}" if (i, p) in res.thetas else "–" for p in m.PROJECTIONS] for i in range(m.n_layer)]
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
        meta["recheck"] = _recheck(m, teacher if teacher is not None else load_model_args(args, thresholds=False).model, fresh, args,
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
    from eventllm.report import pct
    from eventllm.sparsity.calibrate import check_stream
    from eventllm.sparsity.finetune_parts import round_to_bf16

    r = round_to_bf16(m, check_stream(check_ids, args.check_tokens, args.seed), res.loss_dense)
    inc = r["ppl_increase_on_check_vs_teacher"]
    print(f"rounded to bfloat16: perplexity {100 * inc:+.2f}% vs the dense {reference} on the check stream"
          f"{' (over the bound)' if args.max_ppl_increase is not None and inc > args.safety * args.max_ppl_increase else ''}"
          f"; sparsity MAC-weighted {pct(r['mac_weighted_sparsity_on_check'])}")
    return r


def _recheck_stream(check_ids, args):
    from eventllm.errors import DataError
    from eventllm.sparsity.finetune_parts import fresh_stream

    try:
        return fresh_stream(check_ids, args.check_tokens, args.seed, args.recheck_tokens)
    except DataError:
        raise DataError(f"--recheck-tokens: [{args.split}] of {args.data} has no tokens beside the check stream; give "
                        "fewer --check-tokens or a larger split") from None


def _recheck(m, dense, fresh, args, device, reference) -> dict:
    from eventllm.report import pct
    from eventllm.sparsity.finetune_parts import recheck

    limit = args.safety * args.max_ppl_increase
    r = recheck(m, dense, fresh, limit, device)
    scale, inc = r["scale"], r["ppl_increase_vs_teacher"]
    print(f"recheck on {r['tokens']:,} more tokens of [{args.split}] (beside the check stream): perplexity "
          f"{100 * r['ppl_increase_vs_teacher_before']:+.2f}% vs the dense {reference}" + ("; within the bound" if scale == 1.0 else
          f"; θ scaled by {scale:.3f} to {100 * inc:+.2f}% " + (f"(within {pct(limit)})" if r["within_bound"] else
          f"(NOT within {pct(limit)} even at θ = 0: the fine-tuned weights are over it; try a lower --lr)")) +
          f"; sparsity MAC-weighted {pct(r['mac_weighted_sparsity'])}")
    return r


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
    check_outputs(args.output, args.output_model)
    if args.method == "finetune":
        return _calibrate_by_finetuning(args)
    args.context = args.context or 256
    loaded = load_model_args(args)
    if args.head:
        loaded.model.set_head_threshold(True)
    ids = read_tokens(loaded, args.data, args.split, None)
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
    rows = [[str(i)] + [f"{res.thetas[(i, p)]:.3g} ({res.keeps[(i, p)]:.{2 if greedy else 1}f})" if (i, p) in res.thetas else "–"
                        for p in m.PROJECTIONS] for i in range(m.n_layer)]
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
                         "target_sparsity": args.target_sparsity, "device": device_name(m)} | ({"levels": args.levels} if greedy else {})
    save_thresholds(m, args.output, loaded.name, meta=meta)
    print(f"wrote {args.output}")
    return 0


def add_parser(sub) -> None:
    from eventllm import DEFAULT_MODEL

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
    precision_args(c)
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
