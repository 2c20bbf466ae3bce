"""Evaluation spread over processes and GPUs: a token stream cut into contiguous segments, each run from a fresh
state, the results merged token-weighted.

`--segments N` gives the cut in one process; under `torchrun --nproc-per-node K -m eventllm …` (WORLD_SIZE > 1,
torch.distributed with gloo on CPU, NCCL on GPUs) rank r takes the r-th contiguous block of the N segments and
every rank receives all the segments' results, merged in segment order — so the figures equal the one-process
run with the same --segments. Only rank 0 prints and writes files (`is_main_process`).

The simulator's segments are cut and spread the same way (`eventllm.pipeline.simulate_segments`, which takes a
`World`).
"""

from __future__ import annotations

import atexit
import math
import os

from eventllm.pipeline import World, segment_bounds


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def init_world(device: str | None = None) -> World:
    """Join the torchrun process group when there is one (NCCL when `device` is CUDA, else gloo)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = bool(device) and device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_leave_world)
    return World(dist.get_rank(), dist.get_world_size())


def _leave_world() -> None:
    """Tear the process group down before the interpreter exits: gloo's threads still running at exit made a rank
    abort now and then ("terminate called without an active exception", SIGABRT) after its work was done."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def end_rank(code: int) -> None:
    """Under torchrun, end this rank with `code` at once, once its output is flushed: without the interpreter's teardown,
    in which gloo's threads, torn down with the process group or as C++ statics, made a rank abort now and then after
    its work was done ("terminate called without an active exception", SIGABRT; seen in CI-like runs with the process
    group destroyed at exit too). Every collective has completed when the command returns, and every file it wrote was
    closed (written atomically). Outside torchrun it returns."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# --- perplexity ------------------------------------------------------------------------------------------
def evaluate_segments(model, ids: list[int], segments: int, world: World, progress: bool = False, byte_lengths=None) -> dict:
    """`evaluate_stream` of each segment (from a fresh state), merged: perplexities through their mean
    log-likelihood over all scored tokens, bits per byte over all bytes, sparsities weighted by tokens run."""
    import numpy as np

    from eventllm.evaluate.language_model import evaluate_stream

    bounds = segment_bounds(len(ids), segments)
    mine = []
    for i in world.mine(segments):
        a, b = bounds[i]
        r = evaluate_stream(model, ids[a:b], progress=progress, byte_lengths=byte_lengths)
        r["_run"] = b - a
        if byte_lengths is not None:
            r["_bytes"] = int(np.asarray(byte_lengths)[np.asarray(ids[a + 1 : b])].sum())
        mine.append(r)
    return merge_evaluations([r for part in world.gather(mine) for r in part])


def _weighted(parts: list, weights: list[float]):
    first = parts[0]
    if isinstance(first, dict):
        return {k: _weighted([p[k] for p in parts], weights) for k in first}
    if isinstance(first, list):
        return [_weighted([p[i] for p in parts], weights) for i in range(len(first))]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(w * p for w, p in zip(weights, parts)) / sum(weights)
    return first


def merge_evaluations(parts: list[dict]) -> dict:
    """One `evaluate_stream` result from those of consecutive segments (see `evaluate_segments`)."""
    if len(parts) == 1:
        return {k: v for k, v in parts[0].items() if not k.startswith("_")} | {"segments": 1}
    scored = [p["tokens"] for p in parts]
    out = _weighted([{k: v for k, v in p.items() if not k.startswith("_")} for p in parts], [p["_run"] for p in parts])
    for key in ("ppl", "ppl_dense"):
        out[key] = math.exp(sum(math.log(p[key]) * n for p, n in zip(parts, scored)) / sum(scored))
    out["ppl_increase"] = out["ppl"] / out["ppl_dense"] - 1.0
    out["tokens"] = sum(scored)
    if "bits_per_byte" in parts[0]:
        n_bytes = [p["_bytes"] for p in parts]
        for key in ("bits_per_byte", "bits_per_byte_dense"):
            out[key] = sum(p[key] * b for p, b in zip(parts, n_bytes)) / sum(n_bytes)
    sp = out["sparsity"]
    sp["ratio"] = sp["thresholded"] / sp["natural"] if sp["natural"] else None
    return out | {"segments": len(parts)}
