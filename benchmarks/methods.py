"""Sparsity methods side by side: MAC-weighted sparsity against held-out perplexity, one curve per method.

    python benchmarks/methods.py --model zoo:rwkv4-small --data ../shared/data/pg-books \
        --method "paper search=thr_paper.json" --method "per-neuron θ (WINA)=thr_wina.json" \
        --method "fine-tuned=ft.safetensors:thr_ft.json" [--tokens 65536] [--lambada FILE] [--reuse OLD.json] -o OUT
    python benchmarks/methods.py --small -o OUT      (zoo:rwkv4-tiny's shipped θ, a few tokens, 2 LAMBADA passages)

Each --method is LABEL=THRESHOLDS or LABEL=MODEL:THRESHOLDS (a fine-tuned model comes with its own thresholds
file). For every method, every θ × s for s in --scales is evaluated on the first --tokens tokens of the test
split: the perplexity increase is against the *original* dense model (--model, θ = 0) on the same tokens, so a
fine-tuned model is held to the same reference; the sparsity is MAC-weighted (each site weighted by the MACs of
the projection it feeds, the paper's measure) with the mean over sites beside it. At s = 1 LAMBADA is scored
too (accuracy over all passages, or --lambada-limit). The wall time and device of each method come from its
thresholds file (what `eventllm calibrate` recorded when it ran). Writes OUTPUT.json and OUTPUT.png (all
curves on one plot, the 1% bound drawn).
"""

from __future__ import annotations

import json
from pathlib import Path

import _common
import torch

from eventllm.atomic import atomic_path, write_text
from eventllm.report import format_table, pct


def shipped_method() -> list[str]:
    """--small's one method: zoo:rwkv4-tiny's shipped thresholds."""
    return [f"shipped θ={_common.small_thresholds()}"]


# --small: zoo:rwkv4-tiny's shipped θ at two scales on a few tokens of the small data folder, 2 LAMBADA passages
SMALL = {"model": _common.SMALL_MODEL, "data": _common.small_data, "method": shipped_method, "tokens": 32,
         "scales": "0.5,1", "lambada": _common.small_lambada, "lambada_limit": 2, "device": "cpu"}


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--model", required=True, help="the original dense model (zoo:NAME or a file)")
    ap.add_argument("--data", required=True, help="data folder whose test split is evaluated")
    ap.add_argument("--method", action="append", required=True, help="LABEL=THRESHOLDS or LABEL=MODEL:THRESHOLDS")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--scales", default="0.5,0.75,1,1.25,1.5")
    ap.add_argument("--lambada", help="LAMBADA JSONL; omitted: not scored")
    ap.add_argument("--lambada-limit", type=int)
    ap.add_argument("--reuse", help="an earlier OUTPUT.json of this benchmark: a method given here with the same label, model "
                    "and thresholds file, measured there on the same model, data, tokens and scales, is taken from it "
                    "(marked \"reused_from\") instead of being evaluated again")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("-o", "--output", required=True, help="output path without extension (.json and .png are written)")
    args = _common.parse_args(ap, argv, SMALL)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eventllm.data import cached_token_stream
    from eventllm.evaluate.language_model import evaluate_stream
    from eventllm.evaluate.tasks import run_task
    from eventllm.models.registry import load_model
    from eventllm.sparsity.thresholds import apply_thresholds, read_thresholds

    dev = torch.device(args.device)
    scales = [float(s) for s in args.scales.split(",")]
    base = load_model(args.model)
    ids = cached_token_stream(args.data, "test", base.tokenizer, progress=False)[: args.tokens].astype("int64").tolist()
    dense = evaluate_stream(base.model.to(dev), ids, progress=False)
    ref_ppl = dense["ppl"]
    out = {"model": args.model, "data": args.data, "test_tokens": len(ids), "dense_ppl": ref_ppl,
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "methods": {}}
    prior = {}
    if args.reuse:
        before = json.loads(Path(args.reuse).read_text())
        same = {k: before.get(k) == out[k] for k in ("model", "data", "test_tokens")}
        same["dense ppl"] = abs(before.get("dense_ppl", 0) / ref_ppl - 1) < 1e-6
        if not all(same.values()):
            raise SystemExit(f"methods.py: error: --reuse {args.reuse} was measured on another "
                             f"{next(k for k, v in same.items() if not v)}; drop --reuse")
        prior = {label: e for label, e in before["methods"].items() if [p["scale"] for p in e["points"]] == scales
                 and (not args.lambada or "lambada_acc" in e) and before.get("lambada_limit", args.lambada_limit) == args.lambada_limit}
        if args.lambada and "dense_lambada_acc" in before:
            out["dense_lambada_acc"] = before["dense_lambada_acc"]
    out["lambada_limit"] = args.lambada_limit
    if args.lambada and "dense_lambada_acc" not in out:
        lam = run_task(base.model, base.tokenizer, "lambada", args.lambada, args.lambada_limit)
        out["dense_lambada_acc"] = lam["acc"]
    rows = [["dense (θ = 0)", "—", pct(dense["sparsity"]["mac_weighted"]["natural"]), pct(dense["sparsity"]["natural"]), "+0.00%",
             pct(out["dense_lambada_acc"]) if args.lambada else "—", "—"]]
    for spec in args.method:
        label, _, what = spec.partition("=")
        model_path, _, thr = what.rpartition(":") if ":" in what and not what.startswith("zoo:") else ("", "", what)
        old = prior.get(label)
        if old is not None and old["thresholds"] == thr and old["model"] == (model_path or args.model):
            out["methods"][label] = old | {"reused_from": old.get("reused_from", args.reuse)}
            one = next((p for p in old["points"] if p["scale"] == 1.0), None)
            if one is not None:
                secs = f"{old['seconds']:.1f} s" if old["seconds"] is not None else "—"
                rows.append([label + " (reused)", secs + (f" ({old['calibration_device']})" if old["calibration_device"] else ""),
                             pct(one["mac_weighted"]), pct(one["site_mean"]), f"{100 * one['ppl_increase']:+.2f}%",
                             pct(old["lambada_acc"]) if "lambada_acc" in old else "—", f"{one['ppl']:.2f}"])
            continue
        loaded = load_model(model_path) if model_path else load_model(args.model)
        m = loaded.model.to(dev)
        apply_thresholds(m, thr)
        meta = read_thresholds(thr).get("meta", {})
        theta = m.get_thetas()
        points = []
        for s in scales:
            m.set_thetas({k: v * s for k, v in theta.items()})
            r = evaluate_stream(m, ids, progress=False)
            points.append({"scale": s, "ppl": r["ppl"], "ppl_increase": r["ppl"] / ref_ppl - 1,
                           "mac_weighted": r["sparsity"]["mac_weighted"]["thresholded"], "site_mean": r["sparsity"]["thresholded"]})
        m.set_thetas(theta)
        one = next(p for p in points if p["scale"] == 1.0) if 1.0 in scales else None
        entry = {"model": model_path or args.model, "thresholds": thr, "points": points, "seconds": meta.get("seconds"),
                 "calibration_device": meta.get("device"), "method": meta.get("method")}
        if args.lambada and one is not None:
            entry["lambada_acc"] = run_task(m, loaded.tokenizer, "lambada", args.lambada, args.lambada_limit)["acc"]
        out["methods"][label] = entry
        if one is not None:
            secs = f"{entry['seconds']:.1f} s" if entry["seconds"] is not None else "—"
            rows.append([label, secs + (f" ({entry['calibration_device']})" if entry["calibration_device"] else ""),
                         pct(one["mac_weighted"]), pct(one["site_mean"]), f"{100 * one['ppl_increase']:+.2f}%",
                         pct(entry["lambada_acc"]) if "lambada_acc" in entry else "—", f"{one['ppl']:.2f}"])
        print(format_table(["θ scale", "MAC-weighted", "site mean", "test ppl", "vs dense"],
                           [[f"{p['scale']:g}", pct(p["mac_weighted"]), pct(p["site_mean"]), f"{p['ppl']:.2f}",
                             f"{100 * p['ppl_increase']:+.2f}%"] for p in points], title=f"{label} ({thr})"), flush=True)
    print(format_table(["method", "wall time (device)", "MAC-weighted", "site mean", "test ppl vs dense", "LAMBADA", "test ppl"], rows,
                       title=f"{args.model}: {len(ids):,} test tokens of {args.data}, dense ppl {ref_ppl:.2f}, on {out['device']}"))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, entry in out["methods"].items():
        pts = entry["points"]
        ax.plot([100 * p["mac_weighted"] for p in pts], [100 * p["ppl_increase"] for p in pts], "o-", label=label)
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="1% bound")
    ax.set_xlabel("MAC-weighted sparsity (%)")
    ax.set_ylabel("perplexity increase on the test split (%)")
    ax.set_title(f"{args.model}: sparsity vs perplexity (each method's θ × {args.scales})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(args.output + ".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    write_text(Path(args.output + ".json"), json.dumps(out, indent=1))
    print(f"wrote {args.output}.json and .png")


if __name__ == "__main__":
    _common.entry(main)
