"""Shared set-up for the benchmarks: the zoo graphs, an RWKV-4 430M-shaped model driven at measured sparsity, and the
`--small` mode every benchmark has (`parse_args`): the least sizes that still run each of its stages, in seconds on a
CPU, which `tests/test_benchmarks.py` runs so that no benchmark rots.

A new benchmark: `def main(argv=None)`, its parser from `parser(__file__, __doc__)`, its arguments through
`parse_args(ap, argv, SMALL)` with SMALL the sizes of its small run (a trained zoo model: SMALL_MODEL; a model to
calibrate or train: `tiny_model`; text: `small_data`), outputs written only where an argument says, and its case (the
arguments after --small, a check of what it wrote) in tests/test_benchmarks.py. Its file name must not be that of an
importable module (`mapping.py` would shadow the package)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/NAME.py` without an installed eventllm: the repository's packages
    sys.path.append(str(ROOT))

from eventllm.cli.common import Parser  # noqa: E402  (argparse with one-line errors, exit 2)
from eventllm.data import SAMPLE_TEXT  # noqa: E402

SMALL_MODEL = "zoo:rwkv4-tiny"  # the smallest trained zoo model: what --small runs instead of a larger one
TINY_RWKV = {"vocab_size": 256, "d_model": 32, "n_layer": 2}  # the random model --small calibrates: bytes, 2 layers
TINY_SCALE = 1.0  # its weights' scale (`randomize`): at 0.5 the loss hardly feels the inputs, and a search zeroes them all
SMALL_DATA_CHARS = 1 << 14  # characters of held-out text in each split of the --small data folder (a few thousand tokens)


OUTPUT = object()  # in a benchmark's SMALL: this output argument must be given with --small


def parser(file: str, doc: str, whole_doc: bool = False) -> Parser:
    """The argument parser of benchmark `file` (its name in messages), described by `doc`'s first line (or all of it)."""
    if whole_doc:
        return Parser(prog=Path(file).name, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return Parser(prog=Path(file).name, description=doc.split("\n")[0])


def parse_args(ap: argparse.ArgumentParser, argv: list[str] | None, small: dict) -> argparse.Namespace:
    """`ap`'s arguments from `argv` (None: the command line), with `--small` added: given, the values in `small`
    (by dest; a function is called for its value, only then) replace the defaults, and the arguments they name are no
    longer required (but those given as OUTPUT are: a small run writes where it is told, never into the default place
    of the full run's results); arguments given still win."""
    def show(v) -> str:
        return f"<{v.__name__}>" if callable(v) else "x".join(map(str, v)) if isinstance(v, tuple) else str(v)

    shown = " ".join(f"{k.replace('_', '-')}={show(v)}" for k, v in small.items() if v is not OUTPUT)
    ap.add_argument("--small", action="store_true", help="the smallest run of every stage (a smoke test, seconds on a CPU; "
                    "tests/test_benchmarks.py runs it)" + (f": {shown}" if shown else ""))
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--small", action="store_true")
    if pre.parse_known_args(argv)[0].small:
        for action in ap._actions:
            if action.dest in small:
                value = small[action.dest]
                if value is OUTPUT:
                    action.default, action.required = None, True
                else:
                    action.default, action.required = value() if callable(value) else value, False
                if not action.option_strings:  # a positional: may be left out now
                    action.nargs = "?"
    return ap.parse_args(argv)


def write_json(path: str, obj, indent: int = 1) -> None:
    """A benchmark's figures as JSON at `path`, written whole or not at all, and where they went."""
    import json

    from eventllm.atomic import write_text

    write_text(path, json.dumps(obj, indent=indent) + "\n")
    print(f"wrote {path}")


def entry(main) -> None:
    """Run a benchmark's `main` as a script: a library error (a bad file, an unknown model) is one line on stderr and
    exit status 2, as the eventllm commands do."""
    from eventllm.errors import EventLLMError

    try:
        code = main()
    except EventLLMError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def small_thresholds() -> str:
    """The thresholds file shipped with SMALL_MODEL."""
    from eventllm.pipeline import shipped_thresholds

    return str(shipped_thresholds(SMALL_MODEL))


def tiny_model(n_layer: int = TINY_RWKV["n_layer"]) -> str:
    """An RWKV-4 over bytes (TINY_RWKV, `n_layer` layers) with random weights in every part, saved once beside the token
    cache: what --small calibrates and fine-tunes instead of a trained model, 100x faster per step than zoo:rwkv4-tiny."""
    from eventllm.data import default_cache_dir
    from eventllm.models import RWKV, RWKVConfig
    from eventllm.models.checkpoints import save_eventllm

    name = f"rwkv4-bytes-{n_layer}x{TINY_RWKV['d_model']}-random{TINY_SCALE:g}.safetensors"
    path = default_cache_dir().parent / "benchmark-small-model" / name
    if not path.is_file():
        save_eventllm(RWKV(RWKVConfig(**TINY_RWKV | {"n_layer": n_layer})).randomize(seed=0, scale=TINY_SCALE).eval(), path)
    return str(path)


def small_lambada() -> str:
    """The LAMBADA test file shipped in eventllm/heldout (xz-compressed; read up to a limit, as --small does)."""
    from eventllm.evaluate.tasks import default_task_file

    return str(default_task_file("lambada", None))


def small_data() -> str:
    """A tiny data folder (train, valid and test split files, SMALL_DATA_CHARS characters each, cut one after the
    other from the pg-books test text shipped in eventllm/heldout), written once beside the token cache: what
    --small reads instead of a corpus, so its token streams take milliseconds."""
    import lzma

    from eventllm.atomic import write_text
    from eventllm.data import HELDOUT_TEXT, default_cache_dir, split_files

    folder = default_cache_dir().parent / "benchmark-small-data"
    splits = ("train", "valid", "test")
    if set(split_files(folder)) != set(splits):  # written once: the token cache keys on the files' times
        with lzma.open(split_files(HELDOUT_TEXT)["test"], "rt", encoding="utf-8") as f:
            text = f.read(len(splits) * SMALL_DATA_CHARS)
        for i, split in enumerate(splits):
            write_text(folder / f"{split}.txt", text[i * SMALL_DATA_CHARS:(i + 1) * SMALL_DATA_CHARS])
    return str(folder)


def zoo(name: str):
    """(loaded model, graph with the shipped calibrated θ, sample tokens) of zoo model `name` (or of a model file, θ = 0)."""
    from eventllm import pipeline

    loaded = pipeline.load(name if Path(name).is_file() else f"zoo:{name}", thresholds="shipped")
    graph = pipeline.build(loaded.model, loaded.name)
    return loaded, graph, loaded.tokenizer.encode(SAMPLE_TEXT)


def per_projection_sparsity(graph, tokens) -> dict[str, float]:
    """Zero fraction of every threshold output, averaged per projection over layers (executor run)."""
    from eventllm.process.executor import Executor

    ex = Executor(graph)
    ex.run(tokens)
    out: dict[str, list[float]] = {}
    for p in graph:
        if p.kind == "threshold":
            frac = 1 - ex.counts.per_process[p.name]["events_out"] / (p.out_ports["out"].size * len(tokens))
            out.setdefault(p.attrs["projection"], []).append(frac)
    return {k: float(np.mean(v)) for k, v in out.items()}


def set_thresholds_for_sparsity(graph, tokens, target: dict[str, float]) -> None:
    """Give every threshold of `graph` the θ at which its input has the target zero fraction on `tokens`
    (the |x| quantile), one layer at a time so that each layer sees the thresholded earlier layers (within a
    layer, the inputs are taken with that layer's θ still 0: the sparsity reached is measured afterwards)."""
    from eventllm.process.executor import Executor

    layers = sorted({p.layer for p in graph if p.kind == "threshold"})
    for p in graph:
        if p.kind == "threshold":
            p.vars["theta"].value[...] = 0.0
    for layer in layers:
        sites = [p for p in graph if p.kind == "threshold" and p.layer == layer]
        sources = [p.in_ports["inp"].sources[0].src.path for p in sites]
        ex = Executor(graph, probes=sorted(set(sources)))
        ex.run(tokens)
        for p, src in zip(sites, sources):
            q = target[p.attrs["projection"]]
            p.vars["theta"].value[...] = np.quantile(np.abs(ex.probed(src)).ravel(), q) if q > 0 else 0.0


RWKV4_SHAPES = {(24, 1024): "430M", (24, 2048): "1.5B", (32, 2560): "3B"}  # BlinkDL's RWKV-4 Pile models: (layers, width)


def shape(text: str) -> tuple[int, int]:
    """An argument LAYERSxWIDTH, e.g. 24x1024: (layers, width)."""
    try:
        layers, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a shape as LAYERSxWIDTH, e.g. 24x1024") from None
    if layers < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: layers and width must be ≥ 1")
    return layers, width


def floats(text: str) -> list[float]:
    """An argument of numbers separated by commas, e.g. 0,0.5,1."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas, e.g. 0,0.5,1") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one number")
    return values


def shape_label(layers: int, width: int) -> str:
    """'RWKV-4 430M shape' (the released model's size), or 'RWKV-4 1 x 64 shape' for a shape no released model has."""
    return f"RWKV-4 {RWKV4_SHAPES.get((layers, width), f'{layers} x {width}')} shape"


RWKV4_VOCAB = 50277  # the RWKV-4 Pile models' vocabulary


def random_rwkv(layers: int, width: int, seed: int = 0):
    """An RWKV-4-shaped torch model (vocabulary RWKV4_VOCAB) with random weights, e.g. (24, 1024): the 430M shape."""
    from eventllm.models import RWKV, RWKVConfig

    return RWKV(RWKVConfig(vocab_size=RWKV4_VOCAB, d_model=width, n_layer=layers)).randomize(seed=seed).eval()
