"""Write the model card of a zoo model from measurements: `eventllm evaluate` on the validation split (CPU),
the unigram baseline of the same tokenizer on the same split, and three greedy samples.

    python examples/zoo/write_card.py rwkv4-tiny --data ../shared/data/gutenberg
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from eventllm.data import read_texts, token_stream
from eventllm.evaluate.perplexity import unigram_perplexity
from eventllm.generate.sampling import generate_text
from eventllm.models.registry import ZOO_DIR, load_model

PROMPTS = [
    "It was a bright cold day in April, and",
    "The captain looked at the sea and said",
    "Elizabeth could not help smiling at",
]
SHIP = {"rwkv4-tiny": "examples/zoo/rwkv4-tiny.toml", "opt-tiny": "examples/zoo/opt-tiny.toml"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--data", default="../shared/data/gutenberg")
    args = ap.parse_args()
    folder = ZOO_DIR / args.name
    log = json.loads((folder / "train_log.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["eventllm", "evaluate", "--model", f"zoo:{args.name}", "--data", args.data, "--split", "valid", "--json", f"{tmp}/ev.json", "-q"]
        subprocess.run([sys.executable, "-m", *cmd], check=True, stdout=sys.stderr)
        ev = json.loads(Path(f"{tmp}/ev.json").read_text())
    loaded = load_model(f"zoo:{args.name}")
    tok = loaded.tokenizer
    uni = unigram_perplexity(token_stream(read_texts(args.data, "train"), tok), token_stream(read_texts(args.data, "valid"), tok), tok.vocab_size)
    samples = [{"prompt": p, "greedy": generate_text(loaded.model, tok, p, max_tokens=40)} for p in PROMPTS]
    card = {
        "name": f"zoo:{args.name}", "arch": log["arch"], "parameters": log["parameters"], "config": log["config"],
        "corpus": "../shared/data/gutenberg (War and Peace, Moby Dick, Pride and Prejudice, Poe's works)",
        "split": "train: first 90% of each book; valid: next 5%; test: last 5% (cut at blank lines; eventllm/data.py)",
        "tokenizer": "byte-level BPE, 8000 tokens, trained on the train split (eventllm/zoo/tokenizer.json)",
        "training_tokens": log["tokens_seen"], "train_split_tokens": log["train_tokens_in_split"], "epochs": round(log["epochs"], 2),
        "best_step": log["best_step"], "training_device": log["device"], "training_seconds": round(log["train_seconds"], 1),
        "training_command": f"eventllm train {SHIP[args.name]} -o out/{args.name}   (GPU, bf16 autocast)",
        "valid_ppl": ev["ppl"], "valid_tokens": ev["tokens"], "unigram_ppl": uni,
        "evaluate_command": " ".join(cmd[:-3]),
        "natural_sparsity": ev["sparsity"]["natural"], "samples": samples,
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    md = [f"# zoo:{args.name}", "",
          f"{card['arch']} language model, {card['parameters']:,} parameters: "
          + ", ".join(f"{k}={v}" for k, v in card["config"].items() if k != "vocab_size") + ".", "",
          "| | |", "| --- | --- |",
          f"| corpus | {card['corpus']} |", f"| split | {card['split']} |", f"| tokenizer | {card['tokenizer']} |",
          f"| training | {card['training_tokens']:,} tokens seen ({card['epochs']} epochs of {card['train_split_tokens']:,}); best validation at step {card['best_step']}; {card['training_seconds']} s on {card['training_device']} |",
          f"| training command | `{card['training_command']}` |",
          f"| validation perplexity | **{card['valid_ppl']:.2f}** on {card['valid_tokens']:,} tokens, CPU, `{card['evaluate_command']}` |",
          f"| unigram baseline | {card['unigram_ppl']:.1f} (same tokenizer, counts from the train split, add-one smoothing) |",
          f"| natural activation sparsity | {100 * card['natural_sparsity']:.1f}% (mean over projection inputs) |", "",
          "## Greedy samples (40 tokens)", ""]
    md += [f"- **{s['prompt']}**{s['greedy']}" for s in samples]
    (folder / "card.md").write_text("\n".join(md) + "\n")
    print(json.dumps({k: card[k] for k in ("name", "valid_ppl", "unigram_ppl", "training_tokens")}, indent=1))


if __name__ == "__main__":
    main()
