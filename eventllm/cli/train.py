"""`eventllm train`: a model from a TOML recipe (the zoo models')."""

from __future__ import annotations

from eventllm.cli.common import positive_float, positive_int


def cmd_train(args) -> int:
    from eventllm.training import load_train_config, train

    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    log = train(cfg, args.output, device=args.device, resume=args.resume, progress=not args.quiet, max_seconds=args.max_seconds)
    print(f"{cfg.name}: {log['parameters']:,} parameters, {log['tokens_seen']:,} tokens, best windowed validation loss "
          f"{log['best_valid_loss_windowed']:.3f} at step {log['best_step']}; wrote {args.output}/model.safetensors")
    return 0


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model from a TOML config (the zoo models' recipe)")
    t.add_argument("config", help="training config (see examples/zoo/*.toml)")
    t.add_argument("-o", "--output", required=True, help="output folder (model.safetensors, tokenizer.json, train_log.json)")
    t.add_argument("--steps", type=positive_int, help="override the number of optimiser steps")
    t.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    t.add_argument("--max-seconds", type=positive_float, help="stop early after this much training time")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
