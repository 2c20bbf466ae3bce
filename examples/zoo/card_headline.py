"""Write a zoo model's headline figures into its card (`card.json` → "headline"), from the runs that measured them:
an `eventllm evaluate --json` result on held-out text and an `eventllm demo` report (its `demo.json`).

    python examples/zoo/card_headline.py rwkv4-small --eval docs/runs/eval_rwkv4_small_pgbooks_test_h100.json \\
        --demo docs/runs/s39/demo_cpu.json --note "evaluate: one H100; demo: 2-core CPU, make demo"

`eventllm info` lists every zoo model with these figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eventllm.atomic import write_text
from eventllm.models.registry import ZOO_DIR


def headline(evaluation: dict, demo: dict | None, note: str) -> dict:
    out = {"data": f"{Path(evaluation['data']).name} [{evaluation['split']}]", "tokens": evaluation["tokens"],
           "ppl": evaluation["ppl_dense"], "note": note}
    if "bits_per_byte_dense" in evaluation:
        out["bits_per_byte"] = evaluation["bits_per_byte_dense"]
    if demo:
        best = demo["rows"][-1]
        out |= {"configuration": best["config"], "configuration_tokens": demo["tokens"],
                "sparsity_mac_weighted": best["sparsity_mac_weighted"], "energy_ratio": best["energy_ratio"],
                "latency_ratio": best["latency_ratio"], "cores": best["cores"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--eval", required=True, help="an `eventllm evaluate --json` result of the dense model")
    ap.add_argument("--demo", help="an `eventllm demo` report (demo.json) of the model's best shipped configuration")
    ap.add_argument("--note", default="", help="the commands and machines of those runs")
    args = ap.parse_args()
    path = ZOO_DIR / args.name / "card.json"
    card = json.loads(path.read_text())
    demo = json.loads(Path(args.demo).read_text()) if args.demo else None
    card["headline"] = headline(json.loads(Path(args.eval).read_text()), demo, args.note)
    write_text(path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote the headline of zoo:{args.name} into {path}")


if __name__ == "__main__":
    main()
