"""The Pareto view of issue 14: energy and latency per token against test perplexity, measured side by side.

    python benchmarks/pareto.py [--model zoo:rwkv4-small] [--thresholds F] [--head-thresholds F]
                                [--bits 16,8,4] [--scales 0,0.7,1,1.3] [--eval-tokens N] [--device cuda] [-o DIR]
    python benchmarks/pareto.py --small -o DIR      (zoo:rwkv4-tiny at 16 and 8 bits, θ × 0 and 1, a few tokens; seconds)

Every point is one configuration of the default RWKV zoo model, run for real:
  precision  16 (the trained bf16 weights, float events), 8 (int8 weights, int8 events: 2xINT8 MACs),
             4 (int4 weights, MSE clipping, int8 events)
  head       dense (the paper's), or thresholded (--head-thresholds: a file from `calibrate --head`)
  θ scale    the calibrated thresholds times a factor (0 = natural sparsity)
Perplexity: the model (fake-quantised where low-bit) on the first --eval-tokens of pg-books test, against the
16-bit dense model on the same tokens. Energy and latency: the graph of that configuration, mapped onto SENECA
cores, simulated on the built-in sample text, against the dense 16-bit baseline (θ = 0, every entry processed).
Writes pareto.json and pareto.png (energy and latency against the perplexity increase) into -o.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import platform
import time
from pathlib import Path

import _common

from eventllm.atomic import atomic_path, write_text
from eventllm.report import format_table, pct

PRECISIONS = {16: (16, 16), 8: (8, 8), 4: (4, 8)}  # --bits → (weight bits, event bits)
# --small: zoo:rwkv4-tiny at 16 and 8 bits, natural and calibrated θ, a few tokens of the small data folder and sample text
SMALL = {"output": _common.OUTPUT, "model": _common.SMALL_MODEL, "data": _common.small_data, "bits": "16,8",
         "scales": "0,1", "eval_tokens": 32, "sim_tokens": 4}


@functools.lru_cache(maxsize=1)  # the sweep goes precision by precision: each is loaded and quantised once
def _at_precision(spec: str, weight_bits: int, event_bits: int):
    from eventllm.models.quantize import quantize_model
    from eventllm.models.registry import load_model

    loaded = load_model(spec)
    loaded.model.eval()
    if weight_bits < 16 or event_bits < 16:
        quantize_model(loaded.model, weight_bits, "mse", event_bits=event_bits)
    return loaded


def configure(spec: str, thresholds: str, weight_bits: int, event_bits: int, scale: float, device: str | None):
    """The model at one precision with the thresholds of `thresholds` times `scale`."""
    from eventllm.sparsity.thresholds import apply_thresholds

    base = _at_precision(spec, weight_bits, event_bits)
    loaded = dataclasses.replace(base, model=copy.deepcopy(base.model))
    m = loaded.model
    # the thresholds files hold θ of the 16-bit model; its fingerprint stays valid after quantising
    apply_thresholds(m, thresholds)
    m.set_thetas({k: v * scale for k, v in m.get_thetas().items()})
    if device:
        import torch

        m.to(torch.device(device))
    return loaded


def simulate_point(model, name: str, tokens: list[int], mode: str = "thresholded", fill: float = 1.0) -> dict:
    from mapping import map_graph
    from sim.costs import load_costs
    from sim.engine import Simulator
    from sim.report import MODE_OVERRIDES, public, summarize
    from eventllm.process.build import build_graph

    graph = build_graph(model.cpu(), name)
    mapping = map_graph(graph, "seneca", fill=fill)
    sim = Simulator(graph, mapping, load_costs("seneca"), event_driven=mode != "dense",
                    overrides=MODE_OVERRIDES if mode == "dense" else None)
    sim.run(tokens)
    s = public(summarize(sim))
    return {"energy_j": s["energy_per_token_j"], "latency_s": s["latency_per_token_s"], "cores": mapping.cores_used,
            "synops": s["synaptic_ops_per_token"], "sparsity_sim": s["activation_sparsity"]}


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--model", default="zoo:rwkv4-small")
    ap.add_argument("--thresholds", help="thresholds file without a head site (default: the zoo model's shipped file)")
    ap.add_argument("--head-thresholds", help="a file from `calibrate --head` for the thresholded-head points")
    ap.add_argument("--data", default=str(_common.ROOT.parent / "shared" / "data" / "pg-books"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--bits", default="16,8,4")
    ap.add_argument("--scales", default="0,0.7,1,1.3")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--sim-tokens", type=int, default=32)
    ap.add_argument("--device", help="where the perplexity runs (cpu or cuda)")
    ap.add_argument("--fill", type=float, default=1.0, help="map the configurations with at most this fraction of each core's "
                    "memory (more cores, shards in parallel); the dense baseline is mapped at 1")
    ap.add_argument("-o", "--output", default="out/pareto")
    args = _common.parse_args(ap, argv, SMALL)
    bad = [b for b in args.bits.split(",") if not b.strip().isdigit() or int(b) not in PRECISIONS]
    if bad:
        ap.error(f"--bits: {bad[0]!r} is not one of {', '.join(map(str, PRECISIONS))}")
    import torch

    from eventllm.data import SAMPLE_TEXT, cached_token_stream
    from eventllm.evaluate.perplexity import perplexity
    from eventllm.pipeline import shipped_thresholds

    thresholds = args.thresholds or str(shipped_thresholds(args.model))
    heads = {"dense": thresholds} | ({"thresholded": args.head_thresholds} if args.head_thresholds else {})
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs"
          + (f", {torch.cuda.get_device_name()}" if args.device and args.device.startswith("cuda") else ""))
    base = configure(args.model, thresholds, 16, 16, 0.0, args.device)
    ids = cached_token_stream(args.data, args.split, base.tokenizer)[: args.eval_tokens].astype("int64").tolist()
    sim_tokens = base.tokenizer.encode(SAMPLE_TEXT)[: args.sim_tokens]
    t0 = time.perf_counter()
    ppl_dense = perplexity(base.model, ids).ppl
    dense = simulate_point(base.model, base.name, sim_tokens, mode="dense")
    print(f"dense 16-bit: perplexity {ppl_dense:.3f} on {len(ids):,} tokens of {args.data} [{args.split}]; "
          f"{dense['energy_j'] * 1e6:.2f} µJ, {dense['latency_s'] * 1e6:.1f} µs per token, {dense['cores']} cores")
    points = []
    for bits in [int(b) for b in args.bits.split(",")]:
        wb, eb = PRECISIONS[bits]
        for head, tfile in heads.items():
            for scale in [float(s) for s in args.scales.split(",")]:
                loaded = configure(args.model, tfile, wb, eb, scale, args.device)
                ppl = perplexity(loaded.model, ids).ppl
                sim = simulate_point(loaded.model, loaded.name, sim_tokens, fill=args.fill)
                p = {"weight_bits": wb, "event_bits": eb, "head": head, "theta_scale": scale, "ppl": ppl,
                     "ppl_increase": ppl / ppl_dense - 1, **sim, "energy_ratio": dense["energy_j"] / sim["energy_j"],
                     "latency_ratio": dense["latency_s"] / sim["latency_s"], "cores_ratio": sim["cores"] / dense["cores"],
                     "macs_skipped": 1 - sim["synops"] / dense["synops"]}  # MAC-weighted, the head included
                points.append(p)
                out = Path(args.output)  # kept after every point: an interrupted sweep keeps what it measured
                out.mkdir(parents=True, exist_ok=True)
                write_text(out / "pareto.json", json.dumps({"model": args.model, "ppl_dense": ppl_dense, "dense": dense,
                                                            "points": points, "partial": True}, indent=1))
                print(f"  w{wb}a{eb} head {head:<11} θ×{scale:<4g} ppl {ppl:.3f} ({100 * p['ppl_increase']:+.2f}%)  "
                      f"{sim['energy_j'] * 1e6:7.2f} µJ ({p['energy_ratio']:.2f}x)  {sim['latency_s'] * 1e6:7.1f} µs "
                      f"({p['latency_ratio']:.2f}x)  {sim['cores']} cores", flush=True)
    seconds = time.perf_counter() - t0
    _at_precision.cache_clear()  # main may be called again in this process (the test suite): no model kept beyond the run
    ok = [p for p in points if p["ppl_increase"] <= 0.01]
    best_e = max(ok, key=lambda p: p["energy_ratio"], default=None)
    best_l = max(ok, key=lambda p: p["latency_ratio"], default=None)
    rows = [[f"w{p['weight_bits']}a{p['event_bits']}", p["head"], f"{p['theta_scale']:g}", f"{p['ppl']:.3f}",
             f"{100 * p['ppl_increase']:+.2f}%", f"{p['energy_j'] * 1e6:.2f}", f"{p['energy_ratio']:.2f}x",
             f"{p['latency_s'] * 1e6:.1f}", f"{p['latency_ratio']:.2f}x", p["cores"], pct(p["macs_skipped"]),
             pct(p["sparsity_sim"])] for p in points]
    print(format_table(["precision", "head", "θ scale", "ppl", "Δppl", "µJ/token", "dense ÷", "µs/token", "dense ÷", "cores",
                        "MACs skipped", "site mean"],
                       rows, title=f"\n{args.model} on SENECA against the dense 16-bit model ({dense['energy_j'] * 1e6:.2f} µJ, "
                                   f"{dense['latency_s'] * 1e6:.1f} µs, {dense['cores']} cores); {seconds:.0f} s"))
    for label, b in (("energy", best_e), ("latency", best_l)):
        if b:
            print(f"best {label} within +1% perplexity: w{b['weight_bits']}a{b['event_bits']}, head {b['head']}, θ×{b['theta_scale']:g}: "
                  f"energy {b['energy_ratio']:.2f}x, latency {b['latency_ratio']:.2f}x, {100 * b['ppl_increase']:+.2f}% perplexity")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "data": args.data, "split": args.split, "eval_tokens": len(ids), "sim_tokens": len(sim_tokens),
              "ppl_dense": ppl_dense, "dense": dense, "points": points, "best_energy": best_e, "best_latency": best_l,
              "fill": args.fill, "seconds": seconds, "machine": platform.machine(),
              "device": torch.cuda.get_device_name() if args.device and args.device.startswith("cuda") else "cpu"}
    write_text(out / "pareto.json", json.dumps(result, indent=1))
    plot(points, dense, out / "pareto.png", args.model)
    print(f"wrote {out / 'pareto.json'} and {out / 'pareto.png'}")


def plot(points, dense, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "energy_j", "energy per token (µJ)"), (axes[1], "latency_s", "latency per token (µs)")):
        groups: dict = {}
        for p in points:
            groups.setdefault((p["weight_bits"], p["event_bits"], p["head"]), []).append(p)
        for (wb, eb, head), ps in groups.items():
            ps = sorted(ps, key=lambda p: p["ppl_increase"])
            ax.plot([100 * p["ppl_increase"] for p in ps], [p[key] * 1e6 for p in ps], "o-" if head == "dense" else "s--",
                    label=f"w{wb}a{eb}, head {head}")
        ax.axhline(dense[key] * 1e6, color="grey", lw=1, ls=":", label="dense 16-bit")
        ax.axvline(1.0, color="red", lw=1, ls=":")
        ax.set_xlabel("test perplexity increase over dense 16-bit (%)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title} on SENECA: energy and latency against perplexity")
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a complete plot or the previous one
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    _common.entry(main)
