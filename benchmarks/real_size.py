"""A real-size RWKV-4 checkpoint end to end, stage by stage, with wall time and peak memory of each stage:
write a BlinkDL-format `.pth` with random weights, then `eventllm calibrate` (on the GPU), `build`, `map` and
`simulate --data` (trace engine, event masks from the GPU) over pg-books test — the same commands a user runs.

    python benchmarks/real_size.py --shape 430m --tokens 65536 --device cuda -o /tmp/real430m
    python benchmarks/real_size.py --shape 3b --tokens 8192 --device cuda -o /tmp/real3b --skip-calibrate
    python benchmarks/real_size.py --small -o DIR      (the tiny shape, a few tokens, every stage in this process; seconds)

After every stage its record goes into `stages_partial.json` in the output folder. With `--resume`, a stage whose
record there has the same command and whose outputs are all still there is not run again: its record (wall time,
peak memory) is kept, so a run cut by a time limit goes on with the next stage, e.g. across calls to a machine that
allows 10 minutes a command (`--stop-after map`, then the same command with `--resume`). A stage that runs again
makes every later stage run again.

Each stage is a child process (this script, running `eventllm …` or, for the write, `save_blinkdl`), so its wall time
counts its start and loading and its peak resident memory is its own (`wait4`); the
GPU peak is what torch allocated in that process. With `--in-process` (--small) each stage runs in this process instead:
the peak memory is then this process's so far. The text goes through the shipped default model's
tokenizer (BlinkDL's own 20B tokenizer is a download; its ids are below the 50,277-token vocabulary, so the
costs are those of a text of that length). Random weights: the sparsity is not that of trained weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
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
# --small: the tiny shape calibrated on a few short windows of the small data folder, a few tokens traced, on the CPU,
# every stage in this process
SMALL = {"shape": "tiny", "tokens": 16, "data": _common.small_data, "device": "cpu", "calibrate_tokens": 64,
         "calibrate_context": 16, "check_tokens": 128, "in_process": True}
CUDA_PEAK = "eventllm-benchmark-cuda-peak-bytes:"
RECORD = "eventllm-benchmark-write-record:"


def _stage_child(argv: list[str]) -> int:
    """Run one `eventllm` command in this process and report torch's GPU peak on stderr."""
    from eventllm.cli import main

    rc = main(argv)
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            print(f"{CUDA_PEAK}{torch.cuda.max_memory_allocated()}", file=sys.stderr)
    return rc


def _child(argv: list[str]) -> int:
    """What a stage's child process runs: `--stage -- EVENTLLM ARGS` or `--write-stage SHAPE FOLDER SEED`."""
    if argv[0] == "--stage":
        return _stage_child(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    rec = write_checkpoint(argv[1], Path(argv[2]), int(argv[3]))
    print(RECORD + json.dumps(rec), flush=True)
    return 0


def _run(name: str, argv: list[str], log: Path, command: str | None = None, in_process: bool = False) -> dict:
    """One stage as a child process (or, `in_process`, in this one): wall seconds, peak RSS, GPU peak; stops the benchmark
    when it fails. `argv` is an `eventllm` command line, or with `command` (its description) this script's own child
    arguments."""
    command = command or "eventllm " + " ".join(argv)
    child = argv if argv[0].startswith("--") else ["--stage", "--", *argv]
    print(f"\n== {name}: {command}" + (" (in this process)" if in_process else ""), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        if in_process:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                rc = _child(child)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        else:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *child], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=_common.ROOT)
            _, status, usage = os.wait4(proc.pid, 0)
            rc, peak = os.waitstatus_to_exitcode(status), usage.ru_maxrss
    seconds = time.perf_counter() - t0
    text = log.read_text()
    gpu = [int(line.split(":")[1]) for line in text.splitlines() if line.startswith(CUDA_PEAK)]
    extra = [json.loads(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith(RECORD)]
    shown = [line for line in text.splitlines() if not line.startswith((CUDA_PEAK, RECORD))]
    print("\n".join(shown[-14:]), flush=True)
    if rc != 0:
        sys.exit(f"stage {name} failed with exit code {rc}; see {log}")
    return {"stage": name, "seconds": seconds, "peak_rss_bytes": peak * 1024,
            "gpu_peak_bytes": gpu[-1] if gpu else None, "command": command, **(extra[-1] if extra else {})}


def _outputs(stage: str, out: Path, shape: str) -> list[Path]:
    """The files a finished stage leaves in the output folder (all present: the stage can be reused)."""
    return {"write .pth": [out / f"rwkv4-{shape}.pth", out / "tokenizer.json"],
            "calibrate": [out / "thresholds.json"],
            "build": [out / "graph" / "graph.json", out / "graph" / "arrays.npz"],
            "map": [out / "mapping.json"],
            "simulate (trace)": [out / "simulation.json"]}[stage]


class Stages:
    """The stages run so far, saved to `stages_partial.json` after each; with `resume`, the records of an earlier
    run whose commands match and whose outputs exist are reused, in order, until the first that must run again."""

    def __init__(self, out: Path, shape: str, resume: bool, in_process: bool = False):
        self.out, self.shape, self.file, self.in_process = out, shape, out / "stages_partial.json", in_process
        self.done: list[dict] = []
        self.earlier: list[dict] = []
        if resume and self.file.is_file():
            self.earlier = json.loads(self.file.read_text())["stages"]
        elif resume:
            print(f"--resume: {self.file} does not exist, every stage runs", flush=True)

    def reused(self, stage: str, command: str) -> dict | None:
        """The earlier record of `stage`, taken as this run's, if it can stand for it (same command, outputs present)."""
        i = len(self.done)
        if i >= len(self.earlier) or len(self.done) != sum(1 for s in self.done if s.get("reused")):
            return None  # a stage ran again in this run: everything after it runs again too
        rec = self.earlier[i]
        if rec["stage"] != stage or rec["command"] != command or not all(f.exists() for f in _outputs(stage, self.out, self.shape)):
            return None
        print(f"\n== {stage}: reused from an earlier run of this benchmark ({rec['seconds']:.1f} s then; "
              f"outputs {', '.join(str(f) for f in _outputs(stage, self.out, self.shape))})", flush=True)
        return self.add(rec | {"reused": True})

    def add(self, rec: dict) -> dict:
        self.done.append(rec)
        write_text(self.file, json.dumps({"shape": self.shape, "stages": [{k: v for k, v in s.items() if k != "reused"}
                                                                          for s in self.done]}, indent=1))
        return rec

    def run(self, name: str, argv: list[str], log: Path, command: str | None = None) -> dict:
        command = command or "eventllm " + " ".join(argv)
        return self.reused(name, command) or self.add(_run(name, argv, log, command, self.in_process))


def write_checkpoint(shape: str, folder: Path, seed: int) -> dict:
    """The random BlinkDL `.pth` and the tokenizer beside it (run in a child process, as the other stages): its
    size, and `inner_seconds`, the time after torch is imported (the stage's wall time counts the child's start)."""
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
    print(f"wrote {path} ({n:,} parameters, {path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s after importing torch")
    return {"inner_seconds": time.perf_counter() - t0, "parameters": n, "path": str(path), "file_bytes": path.stat().st_size}


def _write_command(shape: str, seed: int) -> str:
    return f"save_blinkdl(RWKV-4 {shape} with random weights, seed {seed})"


def calibrate_options(args) -> list[str]:
    """The calibrate options given to this benchmark (none: calibrate's defaults, the command as it always was)."""
    given = (("--tokens", args.calibrate_tokens), ("--context", args.calibrate_context), ("--check-tokens", args.check_tokens))
    return [str(v) for option, value in given if value is not None for v in (option, value)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--stage"] or (len(argv) == 4 and argv[0] == "--write-stage"):
        return _child(argv)
    ap = _common.parser(__file__, __doc__, whole_doc=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="430m")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens of pg-books test to trace (default: %(default)s)")
    ap.add_argument("--data", default=str(_common.ROOT.parent / "shared" / "data" / "pg-books"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--topology", default="seneca")
    ap.add_argument("--skip-calibrate", action="store_true", help="θ = 0 (natural sparsity) instead of a calibrated file")
    ap.add_argument("--compare-dense", action="store_true", help="also trace θ = 0 and the dense baseline")
    ap.add_argument("--calibrate-tokens", type=int, help="calibrate --tokens (default: calibrate's)")
    ap.add_argument("--calibrate-context", type=int, help="calibrate --context (default: calibrate's)")
    ap.add_argument("--check-tokens", type=int, help="calibrate --check-tokens (default: calibrate's)")
    ap.add_argument("--in-process", action="store_true", help="run every stage in this process (no child processes: the "
                    "peak memory is this process's so far)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="work folder (checkpoint, graph, mapping, logs, stages.json)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the stages of an earlier run into the same folder that finished (stages_partial.json) "
                         "and whose outputs are there, with their timings; run the rest")
    ap.add_argument("--stop-after", choices=["write", "calibrate", "build", "map"],
                    help="stop after this stage (then --resume runs the rest), e.g. to split the run over time-limited calls")
    args = _common.parse_args(ap, argv, SMALL)
    if args.tokens < 2:
        ap.error("--tokens must be at least 2")
    if args.stop_after == "calibrate" and args.skip_calibrate:
        ap.error("--stop-after calibrate with --skip-calibrate: there is no calibrate stage")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    run = Stages(out, args.shape, args.resume, args.in_process)

    def stop(stage: str) -> bool:
        if args.stop_after == stage:
            print(f"\nstopped after {stage} (--stop-after); the same command with --resume runs the rest", flush=True)
        return args.stop_after == stage

    model = run.run("write .pth", ["--write-stage", args.shape, str(out), str(args.seed)], out / "write.log",
                    _write_command(args.shape, args.seed))["path"]
    if stop("write"):
        return 0
    thr = []
    if not args.skip_calibrate:
        run.run("calibrate", ["calibrate", "--model", model, "--data", args.data, "--max-ppl-increase", "0.01",
                              "--device", args.device, "-o", str(out / "thresholds.json"), "-q", *calibrate_options(args)],
                out / "calibrate.log")
        thr = ["--thresholds", str(out / "thresholds.json")]
        if stop("calibrate"):
            return 0
    run.run("build", ["build", "--model", model, *thr, "-o", str(out / "graph"), "--tokens", "16", "--force"], out / "build.log")
    if stop("build"):
        return 0
    run.run("map", ["map", str(out / "graph"), "--topology", args.topology, "-o", str(out / "mapping.json"), "--no-heatmap"],
            out / "map.log")
    if stop("map"):
        return 0
    sim = ["simulate", str(out / "graph"), "--mapping", str(out / "mapping.json"), "--data", args.data, "--split", "test",
           "--max-tokens", str(args.tokens), "--model", model, "--device", args.device, "--json", str(out / "simulation.json"), "-q"]
    run.run("simulate (trace)", sim + (["--compare-dense"] if args.compare_dense else []), out / "simulate.log")
    stages = run.done

    result = json.loads((out / "simulation.json").read_text())
    total = sum(s["seconds"] for s in stages)
    print(f"\nRWKV-4 {args.shape} shape (random weights), {args.tokens:,} tokens of pg-books test, device {args.device}")
    print(f"{'stage':<18} {'wall s':>8} {'peak RSS GiB':>13} {'GPU peak GiB':>13}")
    for s in stages:
        gpu = f"{s['gpu_peak_bytes'] / 2**30:.2f}" if s["gpu_peak_bytes"] else "-"
        print(f"{s['stage']:<18} {s['seconds']:>8.1f} {s['peak_rss_bytes'] / 2**30:>13.2f} {gpu:>13}"
              + ("   (reused: timed in an earlier run)" if s.get("reused") else ""))
    print(f"{'total':<18} {total:>8.1f}")
    res = result["runs"]["thresholded"] if "runs" in result else result
    summary = {"shape": args.shape, "layers_width_vocab": SHAPES[args.shape], "tokens": args.tokens, "device": args.device,
               "stages": stages, "total_seconds": total, "simulation": str(out / "simulation.json")}
    energy = res.get("energy_per_token_j")
    latency = res.get("latency_per_token_s")
    if energy is not None:
        print(f"energy per token {energy * 1e6:.2f} µJ, latency per token {latency * 1e6:.1f} µs on {args.topology}")
        summary |= {"energy_per_token_j": energy, "latency_per_token_s": latency}
    write_text(out / "stages.json", json.dumps(summary, indent=1))
    print(f"wrote {out / 'stages.json'}")
    return 0


if __name__ == "__main__":
    _common.entry(main)
