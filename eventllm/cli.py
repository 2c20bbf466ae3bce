"""The `eventllm` command. Each subcommand is a thin layer over the library; errors print one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eventllm.errors import EventLLMError


def _write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def cmd_train(args) -> int:
    from eventllm.training import load_train_config, train

    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    log = train(cfg, args.output, device=args.device, resume=args.resume, progress=not args.quiet, max_seconds=args.max_seconds)
    print(f"{cfg.name}: {log['parameters']:,} parameters, {log['tokens_seen']:,} tokens, best windowed validation loss "
          f"{log['best_valid_loss_windowed']:.3f} at step {log['best_step']}; wrote {args.output}/model.safetensors")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eventllm", description="Activation-sparse LLMs on event-driven neuromorphic hardware.")
    p.add_argument("--version", action="version", version=f"eventllm {__import__('eventllm').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a model from a TOML config (the zoo models' recipe)")
    t.add_argument("config", help="training config (see examples/zoo/*.toml)")
    t.add_argument("-o", "--output", required=True, help="output folder (model.safetensors, tokenizer.json, train_log.json)")
    t.add_argument("--steps", type=int, help="override the number of optimiser steps")
    t.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    t.add_argument("--max-seconds", type=float, help="stop early after this much training time")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EventLLMError as e:
        print(f"eventllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eventllm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
