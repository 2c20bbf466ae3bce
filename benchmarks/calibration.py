"""Training-free threshold search vs training-based thresholds (snnTorch surrogate gradients), side by side.

    python benchmarks/calibration.py [--device cuda] [--model zoo:rwkv4-tiny] [--skip-baseline] [--json OUT]
    python benchmarks/calibration.py --small --json OUT      (a tiny random model, a few windows and steps; seconds)

Both start from the same model and the same calibration text (the valid split; 2048 tokens of windows for
the search and for training). The training-free search runs with a 1% perplexity bound; the training-based
baseline then trains until it reaches the same model-wide sparsity. Printed: the wall time of each and
their ratio, and for dense / training-free / training-based the perplexity on the test split, the
sparsity there and LAMBADA (accuracy, perplexity).
"""

from __future__ import annotations

import platform
import time

import _common
import torch

from eventllm.report import format_table, pct


# --small: a tiny random model, a few short windows and training steps, short check and test streams, 2 LAMBADA passages
SMALL = {"model": _common.tiny_model, "data": _common.small_data, "device": "cpu", "eval_tokens": 64, "tokens": 64,
         "context": 16, "check_tokens": 128, "max_steps": 3, "lambada": _common.small_lambada, "lambada_limit": 2}


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--model", default="zoo:rwkv4-tiny")
    ap.add_argument("--data", default=str(_common.ROOT.parent / "shared" / "data" / "gutenberg"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-ppl-increase", type=float, default=0.01)
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--lambada", default=str(_common.ROOT.parent / "shared" / "data" / "lambada" / "lambada_test.jsonl"))
    ap.add_argument("--lambada-limit", type=int, default=500)
    ap.add_argument("--tokens", type=int, help="calibration tokens, in windows of --context (default: calibrate's)")
    ap.add_argument("--context", type=int, help="window length of both (default: calibrate's)")
    ap.add_argument("--check-tokens", type=int, help="the training-free search's check stream (default: calibrate's)")
    ap.add_argument("--max-steps", type=int, help="the training-based baseline's step limit (default: train_thresholds')")
    ap.add_argument("--skip-baseline", action="store_true", help="time only the training-free search, before and now")
    ap.add_argument("--json", help="write the figures as JSON")
    args = _common.parse_args(ap, argv, SMALL)
    windows = {k: v for k, v in (("tokens", args.tokens), ("context", args.context)) if v is not None}

    from eventllm.data import cached_token_stream
    from eventllm.evaluate.language_model import evaluate_stream
    from eventllm.evaluate.tasks import run_task
    from eventllm.models.registry import load_model
    from eventllm.sparsity.calibrate import calibrate
    from eventllm.sparsity.train_baseline import train_thresholds

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    loaded = load_model(args.model)
    tok = loaded.tokenizer
    calib_ids = cached_token_stream(args.data, "valid", tok, progress=False).astype("int64").tolist()
    test_ids = cached_token_stream(args.data, "test", tok, progress=False)[: args.eval_tokens].astype("int64").tolist()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # the calibration as it was (issue 13, start: the WKV recurrence in chunked form, the final scale by 8-step
    # bisection, ~12 check-stream runs) and as it is now (the C kernel on the CPU / the fused kernel on CUDA,
    # the final scale by secant steps), same settings, one after the other in this run
    def timed(**kw):
        model = load_model(args.model).model.to(dev)
        if kw.pop("chunked", False):
            model.wkv_impl = "chunked"
        sync()
        t = time.perf_counter()
        res = calibrate(model, calib_ids, max_ppl_increase=args.max_ppl_increase, progress=False, **windows, **kw)
        sync()
        return model, res, time.perf_counter() - t

    check = {} if args.check_tokens is None else {"check_tokens": args.check_tokens}
    old_model, old, t_old = timed(chunked=dev.type == "cpu", scale_search="bisect", **check)
    free_model, free, t_free = timed(**check)
    same = old.thetas == free.thetas
    print(f"training-free, as before: {t_old:.1f} s ({old.evaluations} loss evaluations, scale {old.scale:.3f}); "
          f"now: {t_free:.1f} s ({free.evaluations}, scale {free.scale:.3f}) → {t_old / t_free:.2f}x faster; same thresholds: {same}")
    print(f"training-free: {t_free:.1f} s, sparsity {pct(free.sparsity)} on its {free.check_tokens:,}-token check stream")
    if args.skip_baseline:
        dense = evaluate_stream(load_model(args.model).model.to(dev), test_ids, progress=False)
        figures = {"device": name, "training_free_before_s": t_old, "training_free_s": t_free, "speedup": t_old / t_free,
                   "same_thresholds": same, "test_tokens": len(test_ids), "dense_test_ppl": dense["ppl"]}
        rows = []
        for label, model, res in (("before", old_model, old), ("now", free_model, free)):
            ev = evaluate_stream(model, test_ids, progress=False)
            inc = ev["ppl"] / dense["ppl"] - 1
            figures[label] = {"seconds": t_old if label == "before" else t_free, "evaluations": res.evaluations, "scale": res.scale,
                              "test_ppl": ev["ppl"], "test_ppl_increase": inc,
                              "mac_weighted": ev["sparsity"]["mac_weighted"]["thresholded"], "site_mean": ev["sparsity"]["thresholded"]}
            rows.append([label, f"{figures[label]['seconds']:.1f}", res.evaluations, f"{res.scale:.3f}", f"{inc * 100:+.2f}%",
                         pct(ev["sparsity"]["mac_weighted"]["thresholded"]), pct(ev["sparsity"]["thresholded"])])
        print(format_table(["calibration", "seconds", "evaluations", "scale", "test ppl", "MAC-weighted", "site mean"], rows,
                           title=f"{args.model} at the {args.max_ppl_increase:.0%} bound on {name}; {len(test_ids):,} test tokens"))
        if args.json:
            _common.write_json(args.json, figures)
        return

    trained_model = load_model(args.model).model.to(dev)
    sync()
    t = time.perf_counter()
    steps = {} if args.max_steps is None else {"max_steps": args.max_steps}
    trained = train_thresholds(trained_model, calib_ids, free.sparsity, device=args.device, progress=False, **windows, **steps)
    sync()
    t_train = time.perf_counter() - t
    print(f"training-based: {t_train:.1f} s ({trained.steps} steps; target reached at step {trained.steps_to_target}, "
          f"{trained.seconds_to_target or float('nan'):.1f} s)")

    rows, figures = [], {"device": name, "training_free_before_s": t_old, "training_free_s": t_free, "same_thresholds": same, "training_based_s": t_train,
                         "training_based_to_target_s": trained.seconds_to_target, "ratio": t_train / t_free,
                         "target_sparsity": free.sparsity, "models": {}}
    dense_model = load_model(args.model).model.to(dev)
    for label, model in (("dense (θ = 0)", dense_model), ("training-free", free_model), ("training-based", trained_model)):
        ev = evaluate_stream(model, test_ids, progress=False)
        lam = run_task(model, tok, "lambada", args.lambada, args.lambada_limit)
        figures["models"][label] = {"ppl": ev["ppl"], "sparsity": ev["sparsity"]["thresholded"], "lambada_acc": lam["acc"],
                                    "lambada_ppl": lam["ppl"]}
        rows.append([label, f"{ev['ppl']:.2f}", f"{100 * (ev['ppl'] / figures['models'].get('dense (θ = 0)', {'ppl': ev['ppl']})['ppl'] - 1):+.2f}%",
                     pct(ev["sparsity"]["thresholded"]), pct(lam["acc"]), f"{lam['ppl']:.3g}"])
    print(format_table(["thresholds", "test ppl", "vs dense", "sparsity", "LAMBADA acc", "LAMBADA ppl"], rows,
                       title=f"{args.model}: {len(test_ids):,} test tokens, LAMBADA first {args.lambada_limit}"))
    print(f"\nwall time to the same model-wide sparsity ({pct(free.sparsity)}) on {name}: training-free {t_free:.1f} s, "
          f"training-based {t_train:.1f} s → training-based ÷ training-free = {t_train / t_free:.2f}x")
    if args.json:
        _common.write_json(args.json, figures)


if __name__ == "__main__":
    _common.entry(main)
