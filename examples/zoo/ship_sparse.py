"""Make a zoo folder from a fine-tuned model: its weights in the precision it runs at, its thresholds (head site
included) with that precision in their meta, and its tokenizer — what `--model zoo:NAME` loads and runs as it is.

    python examples/zoo/ship_sparse.py out/sparse/model.safetensors out/sparse/thresholds.json \\
        --weight-bits 8 --event-bits 8 --tokenizer eventllm/zoo/rwkv4-small/tokenizer.json \\
        -o eventllm/zoo/rwkv4-small-sparse

At 8 bits the weights are stored as int8 integers with one float32 scale per output channel (`mse` scales,
`eventllm.models.quantize`), at 16 as bf16. The θ were fine-tuned with the 16-bit weights: check the shipped folder
on the whole test split against the dense model before shipping it (`eventllm evaluate --model FOLDER/model.safetensors
--thresholds FOLDER/thresholds.json --reference zoo:rwkv4-small --split test`), and write its card with
`write_card.py` / `card_headline.py` (with "thresholds_built_in": true, so that it runs with its θ by default).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from eventllm.errors import EventLLMError
from eventllm.models.checkpoints import load_checkpoint, save_eventllm
from eventllm.models.quantize import describe, quantize_model
from eventllm.sparsity.thresholds import apply_thresholds, read_thresholds, save_thresholds


def ship(model_path: Path, thresholds_path: Path, out: Path, name: str, weight_bits: int, event_bits: int,
         tokenizer: Path | None) -> None:
    model = load_checkpoint(model_path)
    doc = read_thresholds(thresholds_path)
    apply_thresholds(model, thresholds_path)  # the head site too, when the file has one
    if weight_bits < 16 or event_bits < 16:
        quantize_model(model, weight_bits, "mse", event_bits=event_bits)
    out.mkdir(parents=True, exist_ok=True)
    save_eventllm(model, out / "model.safetensors", dtype=torch.bfloat16)
    meta = doc.get("meta", {}) | {"precision": describe(model),
                                  "shipped_from": {"model": str(model_path), "thresholds": str(thresholds_path)}}
    save_thresholds(model, out / "thresholds.json", name, meta)
    if tokenizer:
        shutil.copyfile(tokenizer, out / "tokenizer.json")
    print(f"wrote {out}: model.safetensors ({(out / 'model.safetensors').stat().st_size / 1e6:.1f} MB, "
          f"{weight_bits}-bit weights, {event_bits}-bit events), thresholds.json" + (", tokenizer.json" if tokenizer else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="the fine-tuned model (.safetensors)")
    ap.add_argument("thresholds", type=Path, help="its thresholds file (calibrate --method finetune -o)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the zoo folder to write")
    ap.add_argument("--name", default="zoo:rwkv4-small-sparse", help="the name its thresholds file gives the model")
    ap.add_argument("--weight-bits", type=int, choices=(16, 8), default=8)
    ap.add_argument("--event-bits", type=int, choices=(16, 8), default=8)
    ap.add_argument("--tokenizer", type=Path, help="a tokenizer.json to ship beside it")
    args = ap.parse_args()
    try:
        ship(args.model, args.thresholds, args.output, args.name, args.weight_bits, args.event_bits, args.tokenizer)
    except EventLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
