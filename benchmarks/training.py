"""Training speed of RWKV-4: the chunked torch WKV (old path) against the fused kernel (new path), side by side.

    python benchmarks/training.py [--shapes tiny,small] [--steps 20] [--compile] [--json OUT]      (on a CUDA GPU)

For each model shape, the same model, batch and optimiser run full training steps (bf16 autocast forward,
backward, gradient clipping, AdamW) with `wkv_impl = "chunked"` and then `"fused"`; printed: tokens per
second of each, their ratio, and the loss of both paths on the first batch (they must agree). With --compile, a
third path: fused under torch.compile (inductor; `compile = true` in a training config), its tokens per second
after the warm-up steps (which compile), the compile time, and its first loss.
"""

from __future__ import annotations

import argparse
import json
import time

import _common  # noqa: F401  (import path)
import torch
import torch.nn.functional as F

from eventllm.models.rwkv import RWKV, RWKVConfig
from eventllm.atomic import write_text
from eventllm.report import format_table

SHAPES = {  # the zoo models' shapes and training batches (examples/zoo/*.toml)
    "tiny": (RWKVConfig(vocab_size=8000, d_model=384, n_layer=6, d_ffn=1152), 32, 512),
    "small": (RWKVConfig(vocab_size=8192, d_model=384, n_layer=12, d_ffn=1536), 32, 1024),
}


def run(cfg: RWKVConfig, batch: int, context: int, impl: str, steps: int, warmup: int = 3,
        compile: bool = False) -> tuple[float, float, float]:
    """(tokens per second, loss of the first batch, seconds of the warm-up steps) over `steps` timed training steps."""
    torch.manual_seed(0)
    model = RWKV(cfg).init_weights(0).cuda().train()
    model.wkv_impl = impl
    fwd = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device="cuda").manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (batch, context + 1), device="cuda", generator=g) for _ in range(4)]
    first = None
    torch.cuda.synchronize()
    tw = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            warm = t0 - tw
        x = batches[i % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, _ = fwd(x[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        if first is None:
            first = loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    torch.cuda.synchronize()
    return steps * batch * context / (time.perf_counter() - t0), first, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="tiny,small", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per path (default: %(default)s)")
    ap.add_argument("--compile", action="store_true", help="also the fused path under torch.compile (inductor)")
    ap.add_argument("--json", help="write the figures as JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/training.py: error: needs a CUDA GPU (the fused kernel is a GPU kernel)")
    rows, out = [], {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    for name in args.shapes.split(","):
        cfg, batch, context = SHAPES[name]
        old, loss_old, _ = run(cfg, batch, context, "chunked", args.steps)
        new, loss_new, _ = run(cfg, batch, context, "fused", args.steps)
        params = sum(p.numel() for p in RWKV(cfg).parameters())
        out["shapes"][name] = {"parameters": params, "batch": batch, "context": context, "chunked_tokens_per_s": old,
                               "fused_tokens_per_s": new, "ratio": new / old, "first_loss_chunked": loss_old,
                               "first_loss_fused": loss_new}
        row = [name, f"{params / 1e6:.1f}M", f"{batch}x{context}", f"{old:,.0f}", f"{new:,.0f}", f"{new / old:.2f}x"]
        losses = f"{loss_old:.5f} / {loss_new:.5f}"
        if args.compile:
            try:
                comp, loss_comp, warm = run(cfg, batch, context, "fused", args.steps, compile=True)
            except Exception as e:  # a compiler failure is a result here: say what failed, keep the other figures
                msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                out["shapes"][name] |= {"compile_error": msg}
                row += ["failed", "—", "—"]
                print(f"{name}: torch.compile failed: {msg}")
            else:
                out["shapes"][name] |= {"compiled_tokens_per_s": comp, "compiled_vs_fused": comp / new,
                                        "compiled_warmup_seconds": warm, "first_loss_compiled": loss_comp}
                row += [f"{comp:,.0f}", f"{comp / new:.2f}x", f"{warm:.0f} s"]
                losses += f" / {loss_comp:.5f}"
        rows.append(row + [losses])
    heads = ["shape", "params", "batch", "chunked tok/s", "fused tok/s", "fused / chunked"]
    if args.compile:
        heads += ["compiled tok/s", "compiled / fused", "warm-up (compile)"]
    print(format_table(heads + ["first loss (" + ("chunked / fused / compiled" if args.compile else "both") + ")"], rows))
    print(f"device: {out['device']}, torch {out['torch']}")
    if args.json:
        write_text(args.json, json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
