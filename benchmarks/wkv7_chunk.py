"""The chunked WKV-7 (`eventllm.models.wkv7.wkv7_chunked`) against the token-by-token scan, side by side on one
device: forward and forward + backward seconds per call, their ratio (scan / chunked: above 1, the chunked form is
the faster), and the largest difference of the outputs.

    python benchmarks/wkv7_chunk.py [--lengths 16,32,64,128,256,512] [--batch 4] [--heads 6] [--head-size 64]
                                    [--chunk 32] [--device cpu] [--repeats 3] [--json OUT] [--small]

`--small` runs a quick check (two short lengths, small heads, one repeat). The model's sequence mode takes the
chunked form from `eventllm.models.wkv7.CHUNKED_FROM` tokens on, where this benchmark finds it faster on a CPU.
"""

from __future__ import annotations

import math
import time

import _common
import torch

from eventllm.models.rwkv7 import DECAY_SCALE
from eventllm.models.wkv7 import wkv7_chunked, wkv7_scan


def inputs(batch: int, length: int, heads: int, n: int, device: str, seed: int = 0):
    """Random inputs shaped as RWKV-7's: decays in its range, unit κ, rates in (0, 1), a non-zero start state."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, length, heads, n)
    r, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    w = torch.exp(-DECAY_SCALE * torch.sigmoid(2 * torch.randn(shape, generator=g)))
    kappa = torch.nn.functional.normalize(torch.randn(shape, generator=g), dim=-1)
    a = torch.sigmoid(torch.randn(shape, generator=g))
    S = 0.1 * torch.randn(batch, heads, n, n, generator=g)
    return [t.to(device) for t in (S, r, w, k, v, kappa, a)]


def seconds(fn, args, backward: bool, repeats: int, device: str) -> float:
    """The best of `repeats` timed calls (after one warm-up)."""
    best = math.inf
    for i in range(repeats + 1):
        xs = [x.detach().requires_grad_(backward) for x in args]
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        y, S = fn(*xs)
        if backward:
            (y.square().mean() + S.square().mean()).backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


SMALL = {"lengths": "16,64", "batch": 1, "heads": 2, "head_size": 32, "repeats": 1}


def main(argv: list[str] | None = None) -> int:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--lengths", default="16,32,64,128,256,512", help="comma-separated sequence lengths")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the rows as JSON here")
    args = _common.parse_args(ap, argv, SMALL)
    try:
        lengths = [int(t) for t in args.lengths.split(",")]
    except ValueError:
        ap.error(f"--lengths must be comma-separated integers, got {args.lengths!r}")
    print(f"WKV-7 on {args.device} ({torch.get_num_threads()} threads): batch {args.batch}, {args.heads} heads of "
          f"{args.head_size}, chunks of {args.chunk} (or T where shorter)")
    print(f"{'T':>6} {'scan fwd s':>11} {'chunk fwd s':>12} {'ratio':>6} {'scan f+b s':>11} {'chunk f+b s':>12} "
          f"{'ratio':>6} {'max |dy|':>9}")
    rows = []
    for T in lengths:
        xs = inputs(args.batch, T, args.heads, args.head_size, args.device)
        chunked = lambda *xs, L=min(args.chunk, T): wkv7_chunked(*xs, chunk=L)  # noqa: E731  (as `wkv7` does)
        with torch.no_grad():
            diff = (wkv7_scan(*xs)[0] - chunked(*xs)[0]).abs().max().item()
            fwd = [seconds(f, xs, False, args.repeats, args.device) for f in (wkv7_scan, chunked)]
        both = [seconds(f, xs, True, args.repeats, args.device) for f in (wkv7_scan, chunked)]
        print(f"{T:>6} {fwd[0]:>11.4f} {fwd[1]:>12.4f} {fwd[0] / fwd[1]:>6.2f} {both[0]:>11.4f} {both[1]:>12.4f} "
              f"{both[0] / both[1]:>6.2f} {diff:>9.1e}")
        rows.append({"tokens": T, "scan_forward_s": fwd[0], "chunked_forward_s": fwd[1], "forward_ratio": fwd[0] / fwd[1],
                     "scan_backward_s": both[0], "chunked_backward_s": both[1], "backward_ratio": both[0] / both[1],
                     "max_abs_diff": diff})
    if args.json:
        _common.write_json(args.json, {"args": vars(args), "device": args.device, "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    _common.entry(main)
