"""A real-size RWKV-4 checkpoint end to end, stage by stage, with wall time and peak memory of each stage:
write a BlinkDL-format `.pth` with random weights, then `eventllm calibrate` (on the GPU), `build`, `map` and
`simulate --data` (trace engine, event masks from the GPU) over pg-books test — the same commands a user runs.

    python benchmarks/real_size.py --shape 430m --tokens 65536 --device cuda -o /tmp/real430m
    python benchmarks/real_size.py --shape 3b --tokens 8192 --device cuda -o /tmp/real3b --skip-calibrate

Each stage is a child process (`python -m eventllm …`), so its peak resident memory is its own (`wait4`); the
GPU peak is what torch allocated in that process. The text goes through the shipped default model's
tokenizer (BlinkDL's own 20B tokenizer is a download; its ids are below the 50,277-token vocabulary, so the
costs are those of a text of that length). Random weights: the sparsity is not that of trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common

from eventllm.atomic import write_text

SHAPES = {  # BlinkDL RWKV-4 Pile models: layers, width, vocabulary
    "430m": (24, 1024, 50277),
    "1b5": (24, 2048, 50277),
    "3b": (32, 2560, 50277),
    "tiny": (2, 128, 50277),  # a seconds-long rehearsal of every stage
}
CUDA_PEAK = "eventllm-benchmark-cuda-peak-bytes:"


def _stage_child(argv: list[str]) -> int:
    """Run one `eventllm` command in this process and report torch's GPU peak on stderr."""
    from eventllm.cli import main

    rc = main(argv)
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            print(f"{CUDA_PEAK}{torch.cuda.max_memory_allocated()}", file=sys.stderr)
    return rc


def _run(name: str, argv: list[str], log: Path) -> dict:
    """One stage as a child process: wall seconds, peak RSS, GPU peak; stops the benchmark when it fails."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", "--", *argv]
    print(f"\n== {name}: eventllm {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=_common.ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    text = log.read_text()
    rc = os.waitstatus_to_exitcode(status)
    gpu = [int(line.split(":")[1]) for line in text.splitlines() if line.startswith(CUDA_PEAK)]
    shown = [line for line in text.splitlines() if not line.startswith(CUDA_PEAK)]
    print("\n".join(shown[-14:]), flush=True)
    if rc != 0:
        sys.exit(f"stage {name} failed with exit code {rc}; see {log}")
    return {"stage": name, "seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,
            "gpu_peak_bytes": gpu[-1] if gpu else None, "command": "eventllm " + " ".join(argv)}


def write_checkpoint(shape: str, folder: Path, seed: int) -> dict:
    """The random BlinkDL `.pth` and the tokenizer beside it, timed in this process."""
    import resource

    import torch

    from eventllm.models import RWKV, RWKVConfig
    from eventllm.models.checkpoints import save_blinkdl
    from eventllm.models.registry import ZOO_DIR

    layers, width, vocab = SHAPES[shape]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = RWKV(RWKVConfig(vocab_size=vocab, d_model=width, n_layer=layers)).randomize(seed=seed).eval()
    path = save_blinkdl(model, folder / f"rwkv4-{shape}.pth")
    shutil.copyfile(ZOO_DIR / "rwkv4-small" / "tokenizer.json", folder / "tokenizer.json")
    n = sum(p.numel() for p in model.parameters())
    del model
    return {"stage": "write .pth", "seconds": time.perf_counter() - t0, "parameters": n, "path": str(path),
            "file_bytes": path.stat().st_size, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "gpu_peak_bytes": None, "command": f"save_blinkdl(RWKV-4 {shape} with random weights)"}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--stage":
        return _stage_child(sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="430m")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens of pg-books test to trace (default: %(default)s)")
    ap.add_argument("--data", default=str(_common.ROOT.parent / "shared" / "data" / "pg-books"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--topology", default="seneca")
    ap.add_argument("--skip-calibrate", action="store_true", help="θ = 0 (natural sparsity) instead of a calibrated file")
    ap.add_argument("--compare-dense", action="store_true", help="also trace θ = 0 and the dense baseline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="work folder (checkpoint, graph, mapping, logs, stages.json)")
    args = ap.parse_args()
    if args.tokens < 2:
        sys.exit("real_size.py: error: --tokens must be at least 2")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stages = [write_checkpoint(args.shape, out, args.seed)]
    print(f"wrote {stages[0]['path']} ({stages[0]['parameters']:,} parameters) in {stages[0]['seconds']:.1f} s", flush=True)
    model = stages[0]["path"]
    thr = []
    if not args.skip_calibrate:
        stages.append(_run("calibrate", ["calibrate", "--model", model, "--data", args.data, "--max-ppl-increase", "0.01",
                                         "--device", args.device, "-o", str(out / "thresholds.json"), "-q"], out / "calibrate.log"))
        thr = ["--thresholds", str(out / "thresholds.json")]
    stages.append(_run("build", ["build", "--model", model, *thr, "-o", str(out / "graph"), "--tokens", "16", "--force"], out / "build.log"))
    stages.append(_run("map", ["map", str(out / "graph"), "--topology", args.topology, "-o", str(out / "mapping.json"), "--no-heatmap"],
                       out / "map.log"))
    sim = ["simulate", str(out / "graph"), "--mapping", str(out / "mapping.json"), "--data", args.data, "--split", "test",
           "--max-tokens", str(args.tokens), "--model", model, "--device", args.device, "--json", str(out / "simulation.json"), "-q"]
    stages.append(_run("simulate (trace)", sim + (["--compare-dense"] if args.compare_dense else []), out / "simulate.log"))

    result = json.loads((out / "simulation.json").read_text())
    total = sum(s["seconds"] for s in stages)
    print(f"\nRWKV-4 {args.shape} shape (random weights), {args.tokens:,} tokens of pg-books test, device {args.device}")
    print(f"{'stage':<18} {'wall s':>8} {'peak RSS GiB':>13} {'GPU peak GiB':>13}")
    for s in stages:
        gpu = f"{s['gpu_peak_bytes'] / 2**30:.2f}" if s["gpu_peak_bytes"] else "-"
        print(f"{s['stage']:<18} {s['seconds']:>8.1f} {s['peak_rss_bytes'] / 2**30:>13.2f} {gpu:>13}")
    print(f"{'total':<18} {total:>8.1f}")
    run = result["runs"]["thresholded"] if "runs" in result else result
    summary = {"shape": args.shape, "layers_width_vocab": SHAPES[args.shape], "tokens": args.tokens, "device": args.device,
               "stages": stages, "total_seconds": total, "simulation": str(out / "simulation.json")}
    energy = run.get("energy_per_token_j")
    latency = run.get("latency_per_token_s")
    if energy is not None:
        print(f"energy per token {energy * 1e6:.2f} µJ, latency per token {latency * 1e6:.1f} µs on {args.topology}")
        summary |= {"energy_per_token_j": energy, "latency_per_token_s": latency}
    write_text(out / "stages.json", json.dumps(summary, indent=1))
    print(f"wrote {out / 'stages.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
