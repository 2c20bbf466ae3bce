"""Training speed of RWKV-4: the chunked torch WKV (old path) against the fused kernel (new path), side by side.

    python benchmarks/training.py [--shapes tiny,small] [--steps 20] [--compile] [--json OUT]      (on a CUDA GPU)
    python benchmarks/training.py --small --json OUT      (a micro shape, 2 steps on the CPU; the fused path only where
                                                           its kernel runs: a GPU, or TRITON_INTERPRET=1)

For each model shape, the same model, batch and optimiser run full training steps (bf16 autocast forward,
backward, gradient clipping, AdamW) with `wkv_impl = "chunked"` and then `"fused"`; printed: tokens per
second of each, their ratio, and the loss of both paths on the first batch (they must agree). With --compile, a
third path: fused under torch.compile (inductor; `compile = true` in a training config), its tokens per second
after the warm-up steps (which compile), the compile time, and its first loss.
"""

from __future__ import annotations

import time

import _common
import torch
import torch.nn.functional as F

from eventllm.models import wkv_kernel
from eventllm.models.rwkv import RWKV, RWKVConfig
from eventllm.report import format_table

SHAPES = {  # the zoo models' shapes and training batches (examples/zoo/*.toml)
    "tiny": (RWKVConfig(vocab_size=8000, d_model=384, n_layer=6, d_ffn=1152), 32, 512),
    "small": (RWKVConfig(vocab_size=8192, d_model=384, n_layer=12, d_ffn=1536), 32, 1024),
    "micro": (RWKVConfig(**_common.TINY_RWKV), 2, 16),  # --small's: the tiny random model's shape, two short windows
}
SMALL = {"shapes": "micro", "steps": 2, "warmup": 1, "device": "cpu"}  # --small: one warm-up and two timed steps, CPU


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(cfg: RWKVConfig, batch: int, context: int, impl: str, steps: int, warmup: int = 3,
        compile: bool = False, device: torch.device | None = None) -> tuple[float, float, float]:
    """(tokens per second, loss of the first batch, seconds of the warm-up steps) over `steps` timed training steps
    on `device` (default: the GPU)."""
    device = device or torch.device("cuda")
    torch.manual_seed(0)
    model = RWKV(cfg).init_weights(0).to(device).train()
    model.wkv_impl = impl
    fwd = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (batch, context + 1), device=device, generator=g) for _ in range(4)]
    first = None
    sync(device)
    tw = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
            warm = t0 - tw
        x = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits, _ = fwd(x[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        if first is None:
            first = loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    sync(device)
    return steps * batch * context / (time.perf_counter() - t0), first, warm


def measure(name: str, args, device: torch.device) -> tuple[list[str], dict]:
    """One shape's table row and figures: chunked, fused (where its kernel runs on `device`), compiled (--compile)."""
    cfg, batch, context = SHAPES[name]
    old, loss_old, _ = run(cfg, batch, context, "chunked", args.steps, args.warmup, device=device)
    params = sum(p.numel() for p in RWKV(cfg).parameters())
    figures = {"parameters": params, "batch": batch, "context": context, "chunked_tokens_per_s": old,
               "first_loss_chunked": loss_old}
    row = [name, f"{params / 1e6:.1f}M", f"{batch}x{context}", f"{old:,.0f}"]
    if not wkv_kernel.available(device):  # a CPU without Triton's interpreter: the training loop runs, the kernel cannot
        print(f"{name}: the fused kernel does not run on {device} (a GPU, or TRITON_INTERPRET=1): chunked path only")
        return row + ["—", "—"] + (["—", "—", "—"] if args.compile else []) + [f"{loss_old:.5f}"], figures
    new, loss_new, _ = run(cfg, batch, context, "fused", args.steps, args.warmup, device=device)
    figures |= {"fused_tokens_per_s": new, "ratio": new / old, "first_loss_fused": loss_new}
    row += [f"{new:,.0f}", f"{new / old:.2f}x"]
    losses = f"{loss_old:.5f} / {loss_new:.5f}"
    if args.compile:
        try:
            comp, loss_comp, warm = run(cfg, batch, context, "fused", args.steps, args.warmup, compile=True, device=device)
        except Exception as e:  # a compiler failure is a result here: say what failed, keep the other figures
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            figures |= {"compile_error": msg}
            row += ["failed", "—", "—"]
            print(f"{name}: torch.compile failed: {msg}")
        else:
            figures |= {"compiled_tokens_per_s": comp, "compiled_vs_fused": comp / new, "compiled_warmup_seconds": warm,
                        "first_loss_compiled": loss_comp}
            row += [f"{comp:,.0f}", f"{comp / new:.2f}x", f"{warm:.0f} s"]
            losses += f" / {loss_comp:.5f}"
    return row + [losses], figures


def main(argv: list[str] | None = None) -> None:
    ap = _common.parser(__file__, __doc__)
    ap.add_argument("--shapes", default="tiny,small", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per path (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default: %(default)s)")
    ap.add_argument("--compile", action="store_true", help="also the fused path under torch.compile (inductor)")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu for a rehearsal (--small)")
    ap.add_argument("--json", help="write the figures as JSON")
    args = _common.parse_args(ap, argv, SMALL)
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        ap.error(f"--shapes: unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be at least 1 and --warmup at least 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("needs a CUDA GPU (the fused kernel is a GPU kernel); --device cpu (or --small) rehearses the training loop")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} ({torch.get_num_threads()} threads)"
    rows, out = [], {"device": name, "torch": torch.__version__, "shapes": {}}
    for shape in args.shapes.split(","):
        row, out["shapes"][shape] = measure(shape, args, device)
        rows.append(row)
    heads = ["shape", "params", "batch", "chunked tok/s", "fused tok/s", "fused / chunked"]
    if args.compile:
        heads += ["compiled tok/s", "compiled / fused", "warm-up (compile)"]
    print(format_table(heads + ["first loss (" + ("chunked / fused / compiled" if args.compile else "both") + ")"], rows))
    print(f"device: {out['device']}, torch {out['torch']}")
    if args.json:
        _common.write_json(args.json, out, indent=2)


if __name__ == "__main__":
    _common.entry(main)
