"""A thresholds file with every θ (the head site's too) times a factor, as `pareto.py --scales` applies it.

    python benchmarks/scale_thresholds.py IN.json SCALE -o OUT.json
    python benchmarks/scale_thresholds.py --small -o OUT.json     (zoo:rwkv4-tiny's shipped file × 1.3)

pareto.py quantises the model, loads a file calibrated at 16 bits and sets θ × scale, at every precision it
sweeps; `eventllm build --thresholds OUT.json --weight-bits 8 --event-bits 8` then builds the same configuration
from the command line (the values are float(θ) * scale, written exactly). `build` refuses another precision than
the one a file's meta says it was calibrated at, so OUT.json keeps that as meta.theta_scale.calibrated_precision
instead of meta.precision: its θ are the 16-bit ones, applied as pareto.py applies them.
"""

from __future__ import annotations

import json

import _common

from eventllm.atomic import write_text
from eventllm.sparsity.thresholds import read_thresholds

SMALL = {"thresholds": _common.small_thresholds, "scale": 1.3}  # --small: a shipped file, a scale pareto.py sweeps


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("thresholds")
    ap.add_argument("scale", type=float)
    ap.add_argument("-o", "--output", required=True)
    args = _common.parse_args(ap, argv, SMALL)
    doc = read_thresholds(args.thresholds)
    doc["thresholds"] = [{p: float(v) * args.scale for p, v in layer.items()} for layer in doc["thresholds"]]
    if "head" in doc:
        doc["head"] = float(doc["head"]) * args.scale
    meta = doc.setdefault("meta", {})
    meta["theta_scale"] = {"scale": args.scale, "of": args.thresholds, "calibrated_precision": meta.pop("precision", None)}
    write_text(args.output, json.dumps(doc, indent=2))
    print(f"wrote {args.output}: θ of {args.thresholds} × {args.scale:g}")


if __name__ == "__main__":
    _common.entry(main)
