"""The paper's threshold search vs the greedy allocation by measured loss (issue 13 item 3), on the same data.

    python benchmarks/allocation.py [--model zoo:rwkv4-tiny] [--data ../shared/data/gutenberg] [--device cuda]
                                    [--eval-tokens N] [--json OUT] [--thresholds-dir DIR]
    python benchmarks/allocation.py --small --json OUT      (a few windows and levels on the CPU; seconds)

Both searches calibrate the same model on the same windows of the valid split with the same bound, check stream
and safety (`calibrate(search="paper" | "greedy")`), then each is evaluated on the held-out test split (the first
--eval-tokens tokens, as `eventllm evaluate --split test --max-tokens N` does). Printed per search: wall time, loss
evaluations, the common θ scale, the check-stream and test perplexity increase, and the sparsity MAC-weighted (the
headline) and mean over sites.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import _common
import torch

from eventllm.report import format_table, pct


# --small: both searches on a tiny random model over a few short windows, a few levels, a short check stream and test
# text, on the CPU
SMALL = {"model": _common.tiny_model, "data": _common.small_data, "device": "cpu", "tokens": 64, "context": 16,
         "check_tokens": 128, "levels": 3, "eval_tokens": 64}


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--model", default="zoo:rwkv4-tiny")
    ap.add_argument("--data", default=str(_common.ROOT.parent / "shared" / "data" / "gutenberg"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--searches", default="paper,greedy")
    ap.add_argument("--max-ppl-increase", type=float, default=0.01)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--check-tokens", type=int, default=32768)
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--scores", default="magnitude")
    ap.add_argument("--eval-tokens", type=int, help="first N tokens of the test split (default: all)")
    ap.add_argument("--json", help="write the figures (and the greedy search's site prices) as JSON")
    ap.add_argument("--thresholds-dir", help="write each search's thresholds file here")
    args = _common.parse_args(ap, argv, SMALL)

    from eventllm.data import cached_token_stream
    from eventllm.evaluate.language_model import evaluate_stream
    from eventllm.models.quantize import describe
    from eventllm.pipeline import load
    from eventllm.sparsity.calibrate import calibrate
    from eventllm.sparsity.thresholds import save_thresholds

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {args.model} on {args.data}")
    loaded = load(args.model, device=args.device)
    m = loaded.model
    valid = cached_token_stream(args.data, "valid", loaded.tokenizer).astype("int64").tolist()
    test = cached_token_stream(args.data, "test", loaded.tokenizer).astype("int64").tolist()[: args.eval_tokens]
    stem = loaded.name.replace(":", "_") if loaded.name.startswith("zoo:") else Path(loaded.name).stem  # a file: its name
    runs, rows = {}, []
    for search in args.searches.split(","):
        m.set_thetas(0.0)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = calibrate(m, valid, max_ppl_increase=args.max_ppl_increase, tokens=args.tokens, context=args.context,
                        check_tokens=args.check_tokens, scores=args.scores, search=search, levels=args.levels, progress=False)
        seconds = time.perf_counter() - t0
        if args.thresholds_dir:
            meta = res.meta() | {"precision": describe(m), "data": args.data, "split": "valid", "max_ppl_increase": args.max_ppl_increase,
                                 "check_tokens": args.check_tokens}
            save_thresholds(m, Path(args.thresholds_dir) / f"{stem}_{search}.json", loaded.name, meta=meta)
        ev = evaluate_stream(m, test)
        sp = ev["sparsity"]
        runs[search] = {
            "seconds": seconds, "evaluations": res.evaluations, "scale": res.scale,
            "check": {"ppl_increase": res.ppl_increase, "mac_weighted": res.mac_weighted, "site_mean": res.sparsity},
            "test": {"tokens": ev["tokens"], "ppl_dense": ev["ppl_dense"], "ppl": ev["ppl"], "ppl_increase": ev["ppl_increase"],
                     "mac_weighted": sp["mac_weighted"], "site_mean": sp["site_mean"], "per_projection": sp["per_projection"]},
            "keep_fractions": res.meta()["keep_fractions"],
        }
        if search == "greedy":
            runs[search]["prices"] = [h for h in res.history if h.get("phase") == "profile"]
        rows.append([search, f"{seconds:.1f}", res.evaluations, f"{res.scale:.3f}", f"{100 * res.ppl_increase:+.2f}%",
                     f"{100 * ev['ppl_increase']:+.2f}%",
                     f"{pct(sp['mac_weighted']['natural'])} → {pct(sp['mac_weighted']['thresholded'])}",
                     f"{pct(sp['site_mean']['natural'])} → {pct(sp['site_mean']['thresholded'])}"])
        print(f"{search}: done in {seconds:.1f} s", flush=True)
    print(format_table(["search", "s", "evals", "θ scale", "check ppl", "test ppl", "MAC-weighted (test)", "site mean (test)"], rows,
                       title=f"\n{args.model}: the paper's search vs greedy allocation at ≤ {100 * args.max_ppl_increase:g}% "
                             f"(test split, {len(test):,} tokens)"))
    if args.json:
        _common.write_json(args.json, {"device": name, "model": args.model, "data": args.data, "args": vars(args), "runs": runs},
                           indent=2)


if __name__ == "__main__":
    _common.entry(main)
