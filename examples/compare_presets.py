"""The same thresholded model and prompt on a SENECA-like and a Loihi-2-like chip: energy and latency per token.

    python examples/compare_presets.py [--prompt TEXT]
"""

import argparse

from eventllm import pipeline
from eventllm.report import format_table


def main(prompt: str = "The captain looked at the sea and said") -> dict:
    loaded = pipeline.load("zoo:rwkv4-tiny", thresholds="shipped")
    graph = pipeline.build(loaded.model, loaded.name)
    tokens = loaded.tokenizer.encode(prompt)
    rows, results = [], {}
    for preset in ("seneca", "loihi2"):
        hw = pipeline.place(graph, preset)
        m = hw.mapping
        runs = pipeline.simulate(hw, tokens, ("thresholded", "dense"))
        thr, dense = runs["thresholded"], runs["dense"]
        results[preset] = {"cores": m.cores_used, "energy_per_token_j": thr["energy_per_token_j"],
                           "latency_per_token_s": thr["latency_per_token_s"],
                           "energy_ratio": dense["energy_per_token_j"] / thr["energy_per_token_j"]}
        rows.append([preset, m.cores_used, f"{m.topology.core.memory_bytes // 1024} KiB x {m.topology.core.word_bits} bit",
                     f"{thr['energy_per_token_j'] * 1e6:.2f}", f"{thr['latency_per_token_s'] * 1e6:.1f}",
                     f"{results[preset]['energy_ratio']:.2f}x"])
    print(format_table(["preset", "cores", "core memory", "µJ/token", "µs/token", "dense ÷ thresholded energy"], rows,
                       title=f"zoo:rwkv4-tiny (calibrated θ), {len(tokens)} tokens of {prompt!r}"))
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", default="The captain looked at the sea and said")
    main(ap.parse_args().prompt)
