"""θ scale of the session-28 fine-tuned model (G3) re-checked on a larger stretch of the valid split than the fine-tuning's
32,768-token check stream (valid tokens 506,669..539,436 at seed 0), chosen there only (the test split untouched): the
largest scale whose increase over the original dense model on valid tokens 32,768 .. 32,768 + N (disjoint from the
check stream) stays within the run's own limit (safety 0.6 × 1% = 0.6%).

    python docs/runs/h200_s28/rescale_valid_cpu.py MODEL THR.json OUT.json [--tokens 262144] [--scales 1,0.98,0.96,0.94]

Writes OUT.json: the thresholds at the chosen scale (meta: the start file's, plus "rescaled_on_valid")."""

import argparse
import json
import time

from eventllm.data import cached_token_stream
from eventllm.evaluate.language_model import evaluate_stream
from eventllm.models.registry import load_model
from eventllm.sparsity.thresholds import apply_thresholds, read_thresholds, save_thresholds

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("thresholds")
ap.add_argument("output")
ap.add_argument("--original", default="zoo:rwkv4-small")
ap.add_argument("--data", default="../shared/data/pg-books")
ap.add_argument("--tokens", type=int, default=262144)
ap.add_argument("--skip", type=int, default=32768, help="first valid token of the stretch (the fine-tuning's check stream, seed 0, is valid tokens 506,669..539,436: disjoint)")
ap.add_argument("--scales", default="1,0.98,0.96,0.94")
ap.add_argument("--limit", type=float, default=0.006)
args = ap.parse_args()

base = load_model(args.original)
ids = cached_token_stream(args.data, "valid", base.tokenizer, progress=False)[args.skip: args.skip + args.tokens].astype("int64").tolist()
t0 = time.perf_counter()
ref = evaluate_stream(base.model, ids, progress=False)["ppl"]
print(f"original dense on valid[{args.skip}:{args.skip + len(ids)}]: ppl {ref:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
ft = load_model(args.model)
apply_thresholds(ft.model, args.thresholds)
theta = ft.model.get_thetas()
rows, chosen = [], None
for s in [float(x) for x in args.scales.split(",")]:
    ft.model.set_thetas({k: v * s for k, v in theta.items()})
    r = evaluate_stream(ft.model, ids, progress=False)
    inc = r["ppl"] / ref - 1
    rows.append({"scale": s, "ppl": r["ppl"], "ppl_increase": inc, "mac_weighted": r["sparsity"]["mac_weighted"]["thresholded"],
                 "site_mean": r["sparsity"]["thresholded"]})
    print(f"θ × {s:g}: ppl {r['ppl']:.4f} ({100 * inc:+.2f}%), MAC-weighted {100 * rows[-1]['mac_weighted']:.1f}%, "
          f"site mean {100 * rows[-1]['site_mean']:.1f}%", flush=True)
    if inc <= args.limit:
        chosen = s
        break
if chosen is None:
    raise SystemExit(f"no scale in {args.scales} within {100 * args.limit:.2f}% on valid")
ft.model.set_thetas({k: v * chosen for k, v in theta.items()})
doc = read_thresholds(args.thresholds)
meta = doc.get("meta", {}) | {"rescaled_on_valid": {"scale": chosen, "from": args.thresholds, "valid_tokens": [args.skip, args.skip + len(ids)],
                                                    "limit": args.limit, "original_ppl": ref, "trials": rows}}
save_thresholds(ft.model, args.output, doc["model"]["name"], meta)
print(f"chose θ × {chosen:g}; wrote {args.output}")
