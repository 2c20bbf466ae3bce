"""Fine-tuning with and without weight averaging, side by side in one run: how far the check stream's perplexity
moves from the dense model's because of the optimiser's noise alone.

    python benchmarks/weight_average.py --model zoo:rwkv4-tiny --data ../shared/data/gutenberg --steps 300 --lr 1e-3 \
        [--decay 0.98] [--device cpu] [-o docs/runs/weight_average_tiny]
    python benchmarks/weight_average.py --small -o OUT      (a tiny random model, a few steps; seconds)

Both runs start from the same model and θ (the zoo model's shipped thresholds), the same seed and the same windows,
and hold the sparsity where the start has it (target = the start's MAC-weighted sparsity on the training windows, no
bound), so every change of the check stream's perplexity comes from the weight updates. One run checks (and ends on)
the last iterate, the other an exponential moving average of the weights (`finetune(weight_average=DECAY)`,
`eventllm calibrate --method finetune --weight-average DECAY`). Prints both histories and, over the checks after
the warm-up, the mean and worst perplexity increase of each; writes OUTPUT.json when -o is given.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import _common
import numpy as np

from eventllm.atomic import write_text
from eventllm.report import format_table


# --small: a tiny random model (θ = 0: it ships none), a few steps of two short windows, two checks on a short stream
SMALL = {"model": _common.tiny_model, "data": _common.small_data, "steps": 4, "batch_size": 2, "context": 16,
         "check_every": 2, "check_tokens": 64, "device": "cpu"}


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--model", default="zoo:rwkv4-tiny")
    ap.add_argument("--data", required=True, help="data folder (train split for training, valid for the checks)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--decay", type=float, default=0.98, help="weight-average decay per step")
    ap.add_argument("--ce-weight", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--check-every", type=int, default=25)
    ap.add_argument("--check-tokens", type=int, default=8192)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-o", "--output", help="output path without extension (.json is written)")
    args = _common.parse_args(ap, argv, SMALL)

    from eventllm import pipeline
    from eventllm.data import cached_token_stream
    from eventllm.sparsity.calibrate import check_stream
    from eventllm.sparsity.finetune import _check, finetune

    loaded = pipeline.load(args.model, thresholds="shipped")
    train = cached_token_stream(args.data, "train", loaded.tokenizer, progress=False)
    valid = cached_token_stream(args.data, "valid", loaded.tokenizer, progress=False)
    start = loaded.model
    # hold the start's sparsity: the target is the start's own MAC-weighted sparsity on the check stream (no bound)
    level = _check(start, check_stream(valid, args.check_tokens, 0))[1].mac_skipped()
    runs = {}
    for label, decay in (("last iterate", 0.0), (f"average (decay {args.decay:g})", args.decay)):
        r = finetune(copy.deepcopy(start), train, valid, target_sparsity=level, steps=args.steps, lr=args.lr,
                     ce_weight=args.ce_weight, batch_size=args.batch_size, context=args.context,
                     check_every=args.check_every, check_tokens=args.check_tokens, weight_average=decay,
                     device=args.device, progress=False)
        checks = [h for h in r.history if h.get("check")]
        runs[label] = {"decay": decay, "checks": [{"step": h["step"], "ppl_increase": h["ppl_increase"],
                                                    "mac_weighted": h["check_mac_weighted"]} for h in checks],
                       "seconds": r.seconds, "device": r.device}
    warm = args.steps // 4  # the checks after the first quarter (the warm-up and the first moves)
    rows = []
    steps = [c["step"] for c in next(iter(runs.values()))["checks"]]
    for i, s in enumerate(steps):
        rows.append([str(s)] + [f"{100 * run['checks'][i]['ppl_increase']:+.2f}% ({100 * run['checks'][i]['mac_weighted']:.1f}%)"
                                for run in runs.values()])
    print(format_table(["step", *[f"{k}: check ppl vs dense (MAC-weighted)" for k in runs]], rows,
                       title=f"{args.model}, lr {args.lr:g}, ce weight {args.ce_weight:g}, batch {args.batch_size} × "
                             f"{args.context}, on {next(iter(runs.values()))['device']}"))
    summary = {}
    for k, run in runs.items():
        after = [c["ppl_increase"] for c in run["checks"] if c["step"] >= warm]
        summary[k] = {"mean_ppl_increase": float(np.mean(after)), "worst_ppl_increase": float(np.max(after)),
                      "final_ppl_increase": run["checks"][-1]["ppl_increase"]}
    (_, sa), (_, sb) = summary.items()
    print(format_table(["run", f"mean increase (checks from step {warm})", "worst", "final"],
                       [[k, f"{100 * v['mean_ppl_increase']:+.2f}%", f"{100 * v['worst_ppl_increase']:+.2f}%",
                         f"{100 * v['final_ppl_increase']:+.2f}%"] for k, v in summary.items()]))
    print(f"mean increase, iterate ÷ average: {sa['mean_ppl_increase'] / sb['mean_ppl_increase']:.2f}x"
          if sb["mean_ppl_increase"] > 0 else "the average's mean increase is ≤ 0")
    if args.output:
        write_text(Path(args.output + ".json"), json.dumps({"model": args.model, "data": args.data, "settings": vars(args),
                                                             "runs": runs, "summary": summary}, indent=1))
        print(f"wrote {args.output}.json")


if __name__ == "__main__":
    _common.entry(main)
