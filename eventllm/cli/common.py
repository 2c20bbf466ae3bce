"""What every subcommand shares: option types, output checks, loading a model from the options, the parser class."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

def write_json(path: str | Path, obj) -> None:
    from eventllm.atomic import write_text
    from eventllm.distributed import is_main_process

    if not is_main_process():  # under torchrun every rank has the merged result; rank 0 writes it
        return
    write_text(path, json.dumps(obj, indent=2) + "\n")


def check_outputs(*files, folder=None) -> None:
    """The outputs a command will write (None: not asked for), refused before the work rather than after it."""
    from eventllm.atomic import check_output

    for path in files:
        if path is not None:
            check_output(path)
    if folder is not None:
        check_output(folder, folder=True)


# --- option types: argparse itself refuses a bad number ("argument --top-p: …", exit 2) ----------------
def number(text: str, kind: type, ok, want: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}; give {want}") from None
    if kind is float and not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; give {want}")
    return value


def positive_int(text: str) -> int:
    return number(text, int, lambda v: v >= 1, "an integer ≥ 1")


def non_negative_int(text: str) -> int:
    return number(text, int, lambda v: v >= 0, "an integer ≥ 0")


def seed(text: str) -> int:
    return number(text, int, lambda v: 0 <= v < 2**63, "an integer in 0 … 2^63 - 1")


def non_negative_float(text: str) -> float:
    return number(text, float, lambda v: v >= 0, "a finite number ≥ 0")


def positive_float(text: str) -> float:
    return number(text, float, lambda v: v > 0, "a finite number > 0")


def at_least_two(text: str) -> int:
    return number(text, int, lambda v: v >= 2, "an integer ≥ 2")


def probability(text: str) -> float:
    return number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def fraction(text: str) -> float:
    return number(text, float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


def decay(text: str) -> float:
    return number(text, float, lambda v: 0 <= v < 1, "a decay per step in [0, 1), e.g. 0.995 (0: off)")


def projection_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no projection; give names such as ffn.key,att.output")
    return names


def stop_text(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def loss_ratio(text: str) -> float:
    return number(text, float, lambda v: v >= 1, "a ratio ≥ 1, e.g. 1.001")


def load_model_args(args, thresholds=None):
    """The model of --model on --device with --thresholds (or `thresholds`: "shipped", a file or None) applied;
    the sites a partial file lacks (--allow-partial) are listed on stderr."""
    from eventllm.pipeline import load
    from eventllm.sparsity.thresholds import describe_missing

    path = thresholds if thresholds is not None else getattr(args, "thresholds", None)
    precision = {"weight_bits": getattr(args, "weight_bits", None), "event_bits": getattr(args, "event_bits", None),
                 "method": getattr(args, "quant_method", None),
                 "projections": args.quantize.split(",") if getattr(args, "quantize", None) else None}
    loaded = load(args.model, path, getattr(args, "device", None), getattr(args, "allow_partial", False), precision)
    if loaded.missing_sites:
        print(f"{loaded.thresholds}: {describe_missing(loaded.missing_sites)}", file=sys.stderr)
    return loaded


def read_tokens(loaded, data: str, split: str, max_tokens: int | None, progress: bool = False) -> list[int]:
    from eventllm.data import cached_token_stream

    ids = cached_token_stream(data, split, loaded.tokenizer, progress=progress)
    enough_tokens(ids, max_tokens, data, split)
    return (ids[:max_tokens] if max_tokens else ids).astype("int64").tolist()


def enough_tokens(ids, max_tokens: int | None, data: str, split: str) -> None:
    """At least 2 tokens are scored text: refuse fewer, naming --max-tokens when it is what cut the text short."""
    from eventllm.errors import DataError

    if len(ids) < 2:
        raise DataError(f"{data} (split {split}): fewer than 2 tokens of text; pass a larger text")
    if max_tokens is not None and max_tokens < 2:
        raise DataError(f"--max-tokens {max_tokens}: a text needs at least 2 tokens (one to read, one to predict); give "
                        "--max-tokens 2 or more")


def device_name(model) -> str:
    """What the model runs on, for the record a thresholds file keeps (its calibration time means little without it)."""
    import os
    import platform

    import torch

    dev = next(model.parameters()).device
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads of {os.cpu_count()} cores"


def lava_blocks(args) -> None:
    """--lava-blocks only with --backend lava (default there: hierarchical)."""
    from eventllm.errors import ConfigError

    if args.lava_blocks is not None and args.backend != "lava":
        raise ConfigError(f"--lava-blocks {args.lava_blocks} chooses how the graph runs on lava-nc; drop it, or add --backend lava")
    args.lava_blocks = args.lava_blocks or "hierarchical"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`eventllm generate: error: argument --top-p: …`), like the library's errors."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


SIMULATE_PROMPT = "It was a bright cold day in April, and the clocks were striking thirteen."


LAVA_BLOCKS = ("with --backend lava: hierarchical (a Lava process per process of the graph, a hierarchical process per "
               "layer) or fused (each layer one Lava process running the layer's process models: much faster) (default: hierarchical)")


ALLOW_PARTIAL = "accept a thresholds file that lacks some sites (they run at θ = 0, and are listed)"


def precision_args(p) -> None:
    """--weight-bits, --event-bits, --quant-method, --quantize (eventllm.models.quantize); unset: the precision the
    thresholds file was calibrated at, else the trained 16-bit model."""
    p.add_argument("--weight-bits", type=int, choices=[16, 8, 4], help="projection weights as 8- or 4-bit integers, one scale "
                   "per output channel, post-training (default: 16, or the thresholds file's)")
    p.add_argument("--event-bits", type=int, choices=[16, 8], help="8: the threshold sites send int8 events, one scale per "
                   "token (integer MACs on SENECA with 8/4-bit weights) (default: 16, or the thresholds file's)")
    p.add_argument("--quant-method", choices=["rtn", "mse"], help="rtn: round to nearest; mse: clipping searched per "
                   "channel for the least weight error (default: mse)")
    p.add_argument("--quantize", metavar="PROJ,…", help="quantise only these projections (names as in `eventllm info`, "
                   "'head' for the output head) (default: all and the head)")
