"""Fine-tuning throughput by batch size, side by side in one run: training tokens per second of `finetune` (teacher
forward, student forward and backward through the thresholds, the per-site quantile tracking, AdamW, the weight
average) at each batch size, and each one's ratio to the first.

    python benchmarks/finetune_throughput.py --model zoo:rwkv4-small --data ../shared/data/pg-books \\
        --batch-sizes 32,64,128 [--context 512] [--steps 60] [--device cuda] [-o docs/runs/finetune_throughput]
    python benchmarks/finetune_throughput.py --small -o OUT      (a tiny random model, a few steps on the CPU; seconds)

Every run starts from the same model at θ = 0 with the same seed and the same settings but the batch, ramping towards
a target sparsity (so the quantile tracking runs as in a real run) with no check before the last step. The rate is
measured between the end of step `--warm` and the last step, from the run's own per-step clock (`history`), so the
model's loading, the first check and the CUDA warm-up are outside it.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import _common

from eventllm.atomic import write_text
from eventllm.report import format_table


def batch_list(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give batch sizes as integers separated by commas, e.g. 32,64,128")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one batch size, each ≥ 1")
    return sizes


# --small: a tiny random model, batches of 1 and 2 short windows, 3 steps (1 left out), a short last check, on the CPU
SMALL = {"model": _common.tiny_model, "data": _common.small_data, "batch_sizes": "1,2", "context": 16, "steps": 3,
         "warm": 1, "check_tokens": 64, "device": "cpu"}


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--model", default="zoo:rwkv4-small")
    ap.add_argument("--data", required=True, help="data folder (train split for training, valid for the last check)")
    ap.add_argument("--batch-sizes", type=batch_list, default=[32, 64, 128])
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warm", type=int, default=10, help="steps left out of the rate (default: %(default)s)")
    ap.add_argument("--weight-average", type=float, default=0.995)
    ap.add_argument("--check-tokens", type=int, default=4096)
    ap.add_argument("--device", default=None, help="cuda when there is one, else cpu")
    ap.add_argument("-o", "--output", help="output path without extension (.json is written)")
    args = _common.parse_args(ap, argv, SMALL)
    if args.steps <= args.warm:
        ap.error(f"--steps {args.steps} must be above --warm {args.warm}")

    from eventllm import pipeline
    from eventllm.data import cached_token_stream

    loaded = pipeline.load(args.model, thresholds=False)
    train = cached_token_stream(args.data, "train", loaded.tokenizer, progress=False)
    valid = cached_token_stream(args.data, "valid", loaded.tokenizer, progress=False)
    from eventllm.sparsity.finetune import finetune

    runs = []
    for batch in args.batch_sizes:
        r = finetune(copy.deepcopy(loaded.model), train, valid, target_sparsity=0.7, steps=args.steps, lr=1e-4,
                     batch_size=batch, context=args.context, check_every=10 * args.steps, check_tokens=args.check_tokens,
                     weight_average=args.weight_average, ce_weight=1.0, device=args.device, progress=False)
        t = {h["step"]: h["seconds"] for h in r.history}
        per_step = (t[args.steps] - t[args.warm]) / (args.steps - args.warm)
        runs.append({"batch": batch, "context": args.context, "seconds_per_step": per_step,
                     "tokens_per_s": batch * args.context / per_step, "device": r.device})
        print(f"batch {batch} × {args.context}: {per_step * 1e3:.1f} ms per step, {runs[-1]['tokens_per_s']:,.0f} tokens/s",
              flush=True)
    base = runs[0]["tokens_per_s"]
    rows = [[f"{r['batch']} × {r['context']}", f"{1e3 * r['seconds_per_step']:.1f}", f"{r['tokens_per_s']:,.0f}",
             f"{r['tokens_per_s'] / base:.2f}x"] for r in runs]
    print(format_table(["batch", "ms / step", "training tokens / s", f"÷ batch {runs[0]['batch']}"], rows,
                       title=f"finetune throughput, {args.model}, steps {args.warm + 1}–{args.steps}, on {runs[0]['device']}"))
    if args.output:
        write_text(Path(args.output).with_suffix(".json"), json.dumps({"model": args.model, "runs": runs}, indent=1))


if __name__ == "__main__":
    _common.entry(main)
