"""A scripted chat-like session on the event-driven simulator, from Python: the state carries across turns.

    python examples/chat_session.py [--max-tokens N]
"""

import argparse

from eventllm.generate.backends import SimBackend
from eventllm.generate.sampling import Sampling
from eventllm.generate.session import Session
from eventllm.models.registry import ZOO_DIR, load_model
from eventllm.sparsity.thresholds import apply_thresholds

TURNS = ["The old captain came back to the village.", "He sat down by the fire and said", "In the morning"]


def main(max_tokens: int = 24) -> dict:
    loaded = load_model("zoo:rwkv4-tiny")
    apply_thresholds(loaded.model, ZOO_DIR / "rwkv4-tiny" / "thresholds.json")
    session = Session(SimBackend(loaded.model, "seneca", model_name=loaded.name), loaded.tokenizer,
                      Sampling(temperature=0.8, top_p=0.9, seed=1), max_tokens)
    for prompt in TURNS:
        print(f"you> {prompt}\nmodel> ", end="")
        for piece in session.reply(prompt):
            print(piece, end="", flush=True)
        print()
    s = session.summary()
    print(f"\n{s['tokens']} tokens, {100 * s['sparsity']:.1f}% sparse, {s['energy_per_token_j'] * 1e6:.2f} µJ and "
          f"{s['latency_per_token_s'] * 1e6:.0f} µs per token on SENECA (dense ÷ sparse energy {s['energy_ratio']:.2f}x)")
    return s


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-tokens", type=int, default=24)
    main(ap.parse_args().max_tokens)
