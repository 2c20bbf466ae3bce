"""Write the model card of a zoo model from measurements: its training log, `eventllm evaluate` results
(JSON files written by the runs the card cites), the unigram baseline of the same tokenizer, a loss-curve
plot and sampled continuations.

    python examples/zoo/write_card.py rwkv4-small --data ../shared/data/pg-books \\
        --eval pg-books-test=RUN.json --eval wikitext103-test=RUN.json --eval lambada=RUN.json

Each --eval names a JSON file written by `eventllm evaluate --json` and the command and machine that made it
(`--eval-note LABEL="command … on MACHINE"`); the card states them beside the figures.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from eventllm.atomic import write_text
from eventllm.data import cached_token_stream
from eventllm.evaluate.perplexity import unigram_perplexity
from eventllm.generate.sampling import Sampling, generate_text, repeated_ngram_share
from eventllm.models.registry import ZOO_DIR, load_model

PROMPTS = [
    "It was a bright cold day in April, and",
    "The captain looked at the sea and said",
    "Elizabeth could not help smiling at",
]
CORPORA = {
    "rwkv4-tiny": ("../shared/data/gutenberg (War and Peace, Moby Dick, Pride and Prejudice, Poe's works)",
                   "train: first 90% of each book; valid: next 5%; test: last 5% (cut at blank lines; eventllm/data.py)",
                   "byte-level BPE, 8000 tokens, trained on the train split (eventllm/zoo/tokenizer.json)"),
    "opt-tiny": ("../shared/data/gutenberg (War and Peace, Moby Dick, Pride and Prejudice, Poe's works)",
                 "train: first 90% of each book; valid: next 5%; test: last 5% (cut at blank lines; eventllm/data.py)",
                 "byte-level BPE, 8000 tokens, trained on the train split (eventllm/zoo/tokenizer.json)"),
    "rwkv4-small": ("../shared/data/pg-books (428 public-domain books, train split; 9 valid and 7 test books held out by book)",
                    "pg-books train.txt.xz / valid.txt.xz / test.txt.xz (whole books; ../shared/data/MANIFEST.md)",
                    "byte-level BPE, 8,192 tokens, trained on pg-books train (eventllm/zoo/rwkv4-small/tokenizer.json)"),
}


def loss_curve(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = log["history"]
    tokens = [e["step"] * log["train_config"]["batch_size"] * log["train_config"]["context"] / 1e6 for e in h]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(tokens, [e["train_loss"] for e in h], label="train (one batch)", alpha=0.7)
    ax.plot(tokens, [e["valid_loss"] for e in h], label="validation (windows)", lw=2)
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"zoo:{log['name']}: {log['parameters'] / 1e6:.1f}M parameters, {log['device']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--data", default="../shared/data/pg-books")
    ap.add_argument("--eval", action="append", default=[], metavar="LABEL=JSON", help="an `eventllm evaluate --json` result")
    ap.add_argument("--eval-note", action="append", default=[], metavar="LABEL=TEXT", help="command and machine of that result")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per sample (default: %(default)s)")
    ap.add_argument("--no-unigram", action="store_true", help="skip the unigram baseline (it tokenises the train split)")
    args = ap.parse_args()
    folder = ZOO_DIR / args.name
    log = json.loads((folder / "train_log.json").read_text())
    notes = dict(n.split("=", 1) for n in args.eval_note)
    evals = {}
    for spec in args.eval:
        label, path = spec.split("=", 1)
        r = json.loads(Path(path).read_text())
        entry = {"note": notes.get(label, "")}
        if "ppl" in r:  # the card describes the dense model: a thresholded run's dense figures
            entry |= {"ppl": r.get("ppl_dense", r["ppl"]), "bits_per_byte": r.get("bits_per_byte_dense", r.get("bits_per_byte")),
                      "tokens": r["tokens"], "natural_sparsity": r["sparsity"]["natural"],
                      "natural_sparsity_mac_weighted": r["sparsity"].get("mac_weighted", {}).get("natural")}
        for task, res in r.get("tasks", {}).items():
            entry |= {f"{task}_acc": res["dense"]["acc"], f"{task}_ppl": res["dense"].get("ppl"), f"{task}_n": res["dense"]["n"]}
        evals[label] = entry
    loaded = load_model(f"zoo:{args.name}")
    tok = loaded.tokenizer
    uni = None if args.no_unigram else unigram_perplexity(cached_token_stream(args.data, "train", tok, progress=False),
                                                          cached_token_stream(args.data, "valid", tok, progress=False), tok.vocab_size)
    sampling = Sampling(seed=1)
    samples = []
    for p in PROMPTS:
        text = generate_text(loaded.model, tok, p, max_tokens=args.tokens, sampling=sampling)
        samples.append({"prompt": p, "continuation": text, "repeated_4grams": repeated_ngram_share(tok.encode(text))})
    corpus, split, tokenizer = CORPORA[args.name]
    tc = log["train_config"]
    budget = log.get("time_budget_s")
    stdout = folder / "train_stdout.log"
    if budget is None and stdout.exists():  # older logs: the budget is in the run's own output
        import re

        m = re.search(r"time limit of (\d+) s reached", stdout.read_text())
        budget = int(m.group(1)) if m else None
    card = {
        "name": f"zoo:{args.name}", "arch": log["arch"], "parameters": log["parameters"], "config": log["config"],
        "weights": "bf16 safetensors (model.safetensors)", "corpus": corpus, "split": split, "tokenizer": tokenizer,
        "training_tokens": log["tokens_seen"], "train_split_tokens": log["train_tokens_in_split"], "epochs": round(log["epochs"], 2),
        "best_step": log["best_step"], "training_device": log["device"], "training_seconds": round(log["train_seconds"], 1),
        "training_tokens_per_s": round(log["tokens_seen"] / log["train_seconds"]),
        "training_command": f"eventllm train examples/zoo/{args.name}.toml -o out/{args.name} {f'--max-seconds {budget} ' if budget else ''}  (GPU, bf16 autocast, fused WKV kernel)",
        "valid_ppl_windowed": math.exp(log["best_valid_loss_windowed"]),
        "valid_note": f"mean over {tc['eval_batches'] * tc['batch_size']} windows of {tc['context']} tokens of pg-books valid"
                      + (f" ({tc['unwrap']:.0%} of its pieces unwrapped, as in training)" if tc.get("unwrap") else "")
                      + ", each from a fresh state (the training log's best)",
        "unigram_ppl": uni, "evaluations": evals, "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p, "seed": 1},
        "samples": samples,
    }
    # keep the fields the older cards have, so `eventllm info` reads every card alike
    card |= {"valid_ppl": card["valid_ppl_windowed"], "natural_sparsity": next((e["natural_sparsity"] for e in evals.values() if "natural_sparsity" in e), None)}
    loss_curve(log, folder / "loss_curve.png")
    write_text(folder / "card.json", json.dumps(card, indent=2) + "\n")
    md = [f"# zoo:{args.name}", "",
          f"{card['arch']} language model, {card['parameters']:,} parameters ({card['weights']}): "
          + ", ".join(f"{k}={v}" for k, v in card["config"].items()) + ".", "",
          "| | |", "| --- | --- |",
          f"| corpus | {card['corpus']} |", f"| split | {card['split']} |", f"| tokenizer | {card['tokenizer']} |",
          f"| training | {card['training_tokens']:,} tokens seen ({card['epochs']} epochs of {card['train_split_tokens']:,}); "
          f"best validation at step {card['best_step']}; {card['training_seconds']} s on {card['training_device']} "
          f"({card['training_tokens_per_s']:,} tokens/s) |",
          f"| training command | `{card['training_command']}` |",
          f"| validation perplexity | {card['valid_ppl_windowed']:.2f} ({card['valid_note']}) |",
          *([f"| unigram baseline | {card['unigram_ppl']:.1f} on the valid split (same tokenizer, counts from train, add-one smoothing) |"]
            if card["unigram_ppl"] is not None else []),
          "", "## Held-out evaluation", "",
          "| set | perplexity | bits per byte | LAMBADA acc | tokens / items | natural sparsity | run |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, e in evals.items():
        md.append(f"| {label} | {e.get('ppl', e.get('lambada_ppl', float('nan'))):.2f} | "
                  + (f"{e['bits_per_byte']:.4f}" if e.get("bits_per_byte") else "–") + " | "
                  + (f"{100 * e['lambada_acc']:.2f}%" if "lambada_acc" in e else "–") + " | "
                  + f"{e.get('tokens', e.get('lambada_n', 0)):,} | "
                  + (f"{100 * e['natural_sparsity']:.1f}%" if "natural_sparsity" in e else "–") + f" | {e['note']} |")
    md += ["", "![loss curve](loss_curve.png)", "",
           f"## Samples ({args.tokens} tokens, nucleus sampling: temperature {sampling.temperature}, top-p {sampling.top_p}, seed 1)", ""]
    md += [f"- **{s['prompt']}**{s['continuation']}  \n  *(repeated 4-grams: {100 * s['repeated_4grams']:.1f}%)*" for s in samples]
    write_text(folder / "card.md", "\n".join(md) + "\n")
    print(json.dumps({k: card[k] for k in ("name", "valid_ppl_windowed", "unigram_ppl", "training_tokens")} | {"evaluations": evals}, indent=1))


if __name__ == "__main__":
    main()
