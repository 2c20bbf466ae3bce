"""Sparsity against perplexity: the shipped calibrated thresholds scaled by a common factor, on held-out text.

    python benchmarks/sparsity_curve.py [--tokens N] [--scales 0,0.25,…] [--output docs]
    python benchmarks/sparsity_curve.py --small --output DIR      (a few tokens, two scales; seconds)

For zoo:rwkv4-tiny and zoo:opt-tiny: every θ × s for s in a grid, perplexity increase and mean projection-
input sparsity on the first N tokens of the test split (s = 0 is the natural sparsity, s = 1 the shipped
thresholds). Writes sparsity_curve.png, per_layer_sparsity.png and sparsity_curve.json into --output.
"""

from __future__ import annotations

import json
from pathlib import Path

import _common

from eventllm.report import format_table, pct

SCALES = "0,0.25,0.5,0.75,1,1.25,1.5,2,3"
# --small: natural and shipped θ on a few tokens, written where -o says (never into docs/)
SMALL = {"output": _common.OUTPUT, "tokens": 32, "scales": "0,1", "data": _common.small_data}


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--scales", type=_common.floats, default=SCALES, help="θ scales, with 1 (default: %(default)s)")
    ap.add_argument("--data", default=str(_common.ROOT.parent / "shared" / "data" / "gutenberg"))
    ap.add_argument("--output", default=str(_common.ROOT / "docs"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the plots from OUTPUT/sparsity_curve.json")
    args = _common.parse_args(ap, argv, SMALL)
    if 1.0 not in args.scales:
        ap.error(f"--scales {','.join(f'{s:g}' for s in args.scales)}: include 1 (the shipped thresholds)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eventllm.data import read_texts, token_stream
    from eventllm.evaluate.language_model import evaluate_stream
    from eventllm.models.registry import ZOO_DIR, load_model
    from eventllm.sparsity.thresholds import apply_thresholds

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    curves, layers = {}, {}
    if args.plot_only:
        saved = json.loads((out / "sparsity_curve.json").read_text())
        curves, layers = saved["curves"], saved["per_layer"]
    for name in () if args.plot_only else ("rwkv4-tiny", "opt-tiny"):
        loaded = load_model(f"zoo:{name}")
        m = loaded.model
        ids = token_stream(read_texts(args.data, "test"), loaded.tokenizer).tolist()[: args.tokens]
        apply_thresholds(m, ZOO_DIR / name / "thresholds.json")
        base = m.get_thetas()
        rows, points = [], []
        for s in args.scales:
            m.set_thetas({k: v * s for k, v in base.items()})
            r = evaluate_stream(m, ids, progress=False)
            points.append({"scale": s, "sparsity": r["sparsity"]["thresholded"], "ppl": r["ppl"], "ppl_increase": r["ppl_increase"],
                           "mac_skipped": r["sparsity"]["mac_skipped"]["thresholded"]})
            rows.append([f"{s:g}", pct(r["sparsity"]["thresholded"]), f"{r['ppl']:.2f}", f"{100 * r['ppl_increase']:+.2f}%"])
            if s == 1.0:
                layers[name] = r["sparsity"]["per_layer"]
        curves[name] = points
        print(format_table(["θ scale", "sparsity", "ppl", "vs dense"], rows, title=f"zoo:{name}, {len(ids):,} test tokens"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in curves.items():
        ax.plot([100 * p["sparsity"] for p in pts], [100 * p["ppl_increase"] for p in pts], "o-", label=f"zoo:{name}")
        one = next(p for p in pts if p["scale"] == 1.0)
        ax.annotate("shipped θ", (100 * one["sparsity"], 100 * one["ppl_increase"]), textcoords="offset points", xytext=(5, -12))
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="1% bound")
    ax.set_xlabel("mean projection-input sparsity (%)")
    ax.set_ylabel("perplexity increase on the test split (%)")
    ax.set_title("Sparsity vs perplexity (calibrated θ scaled by a common factor)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sparsity_curve.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (name, per_layer) in zip(axes, layers.items()):
        projs = list(per_layer[0])
        width = 0.8 / len(projs)
        for j, p in enumerate(projs):
            ax.bar([i + j * width for i in range(len(per_layer))], [100 * l[p]["thresholded"] for l in per_layer], width, label=p)
            ax.scatter([i + j * width for i in range(len(per_layer))], [100 * l[p]["natural"] for l in per_layer], color="k", s=6, zorder=3)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(per_layer))], [f"L{i}" for i in range(len(per_layer))])
        ax.set_ylabel("sparsity (%)")
        ax.set_title(f"zoo:{name}")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Projection-input sparsity per layer (bars: shipped thresholds, dots: natural)")
    fig.tight_layout()
    fig.savefig(out / "per_layer_sparsity.png", dpi=110)
    plt.close(fig)
    if not args.plot_only:
        (out / "sparsity_curve.json").write_text(json.dumps({"tokens": args.tokens, "curves": curves, "per_layer": layers}, indent=1) + "\n")
    print(f"wrote {out}/sparsity_curve.png, per_layer_sparsity.png, sparsity_curve.json")


if __name__ == "__main__":
    _common.entry(main)
