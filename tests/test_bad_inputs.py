"""Every bad input ends in one line and exit code 2, fast, and leaves no output (or the old output) behind.

The matrix runs `eventllm.cli.main` in this process on small real files (a 2-layer byte-level RWKV, its
graph and mapping); each case asserts the exit code, a single `eventllm …: error: …` line naming the
problem, no traceback, under 10 s, and that the output path holds what it held before (nothing, or an
old file that must stay byte-identical).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from eventllm.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
TEXT = "The quick brown fox jumps over the lazy dog, and the dog sleeps on. " * 40


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A byte-level model with complete thresholds, its graph folder and mapping, and a text file."""
    from eventllm.models import RWKV, RWKVConfig
    from eventllm.models.checkpoints import save_eventllm
    from eventllm.sparsity.thresholds import save_thresholds

    d = tmp_path_factory.mktemp("bad_inputs")
    model = RWKV(RWKVConfig(vocab_size=256, d_model=32, n_layer=2, d_ffn=64)).randomize(seed=5)
    mpath = save_eventllm(model, d / "model" / "model.safetensors")
    model.set_thetas(0.1)
    thr = save_thresholds(model, d / "thr.json", str(mpath))
    text = d / "text.txt"
    text.write_text(TEXT)
    assert main(["build", "--model", str(mpath), "--thresholds", str(thr), "--tokens", "8", "-o", str(d / "graph")]) == 0
    assert main(["map", str(d / "graph"), "-o", str(d / "mapping.json"), "--no-heatmap"]) == 0
    return SimpleNamespace(dir=d, model=str(mpath), thr=thr, text=str(text), graph=str(d / "graph"), mapping=str(d / "mapping.json"))


def _thr(w, tmp, edit) -> str:
    doc = json.loads(w.thr.read_text())
    edit(doc)
    (tmp / "t.json").write_text(json.dumps(doc))
    return str(tmp / "t.json")


def _truncated_xz(text: str) -> bytes:
    """An .xz file cut in the middle of its stream (an interrupted download)."""
    import lzma

    data = lzma.compress(text.encode(), preset=0)
    return data[: len(data) // 2]


def _file(tmp, name, content) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return str(path)


def _hf(tmp, config) -> str:
    return str(Path(_file(tmp, "hf/config.json", config)).parent)


BINARY = bytes(range(256)) * 4


def _graph_with(w, tmp, edit) -> str:
    """A copy of the graph folder with graph.json edited (`edit` may return bytes to write instead)."""
    import shutil

    g = tmp / "graph"
    shutil.copytree(w.graph, g)
    s = json.loads((g / "graph.json").read_text())
    raw = edit(s, g)
    (g / "graph.json").write_bytes(raw if isinstance(raw, bytes) else json.dumps(s).encode())
    return str(g)


def _mapping_with(w, tmp, edit) -> str:
    d = json.loads(Path(w.mapping).read_text())
    edit(d)
    return _file(tmp, "m.json", json.dumps(d))


COSTS_OK = (ROOT / "sim" / "presets" / "seneca.toml").read_text()
TRAIN = """name = "t"\narch = "rwkv4"\ncorpus = "c.txt"\ntokenizer = "tok.json"\n{extra}\n[model]\nd_model = 32\nn_layer = {n_layer}\n"""


def _pth_payload(tmp):
    """A .pth whose pickle would create a file when loaded without weights_only."""
    import torch

    marker = tmp / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"emb.weight": Payload()}, tmp / "evil.pth")
    return str(tmp / "evil.pth")


# id: (make argv from (w, tmp) with OUT as the output path, text the error line must contain)
CASES = {
    # thresholds files
    "thr-binary": (lambda w, t: ["build", "--model", w.model, "--thresholds", _file(t, "b.json", BINARY), "-o", "OUT"], "not valid JSON"),
    "thr-directory": (lambda w, t: ["build", "--model", w.model, "--thresholds", str(t), "-o", "OUT"], "is a folder, not a thresholds file"),
    "thr-model-is-string": (lambda w, t: ["build", "--model", w.model, "--thresholds", _thr(w, t, lambda d: d.update(model="x")), "-o", "OUT"],
                            '"model" must be an object'),
    "thr-missing-site": (lambda w, t: ["build", "--model", w.model, "--thresholds", _thr(w, t, lambda d: d["thresholds"][1].pop("att.key")), "-o", "OUT"],
                         "no θ for layer 1 att.key"),
    "thr-missing-layer": (lambda w, t: ["evaluate", "--model", w.model, "--data", w.text, "--thresholds", _thr(w, t, lambda d: d["thresholds"].pop()),
                                        "--json", "OUT", "-q"], "--allow-partial"),
    "thr-extra-layer": (lambda w, t: ["build", "--model", w.model, "--thresholds", _thr(w, t, lambda d: d["thresholds"].append(d["thresholds"][0])),
                                      "-o", "OUT"], "θ for 3 layers, the model has 2"),
    "thr-unknown-projection": (lambda w, t: ["build", "--model", w.model, "--thresholds", _thr(w, t, lambda d: d["thresholds"][0].update({"att.gate": 1})),
                                             "-o", "OUT"], "unknown projection 'att.gate'"),
    "thr-unknown-key": (lambda w, t: ["build", "--model", w.model, "--thresholds", _thr(w, t, lambda d: d.update(extra=1)), "-o", "OUT"], "unknown key 'extra'"),
    "thr-nan": (lambda w, t: ["build", "--model", w.model, "--thresholds", _file(t, "n.json", w.thr.read_text().replace('"att.key": 0.1', '"att.key": NaN', 1)),
                          "-o", "OUT"], "θ must be a finite number ≥ 0, got nan; fix the value or recalibrate"),
    "thr-version-99": (lambda w, t: ["build", "--model", w.model, "--thresholds", _thr(w, t, lambda d: d.update(version=99)), "-o", "OUT"],
                       "reads version 1; recalibrate with this eventllm"),
    "thr-json-list": (lambda w, t: ["build", "--model", w.model, "--thresholds", _file(t, "l.json", "[1, 2]"), "-o", "OUT"],
                      "not an eventllm thresholds file (missing \"format\": \"eventllm-thresholds\"); pass the JSON file"),
    "task-file-missing": (lambda w, t: ["evaluate", "--model", w.model, "--tasks", f"piqa={t}/nope.jsonl", "--json", "OUT", "-q"],
                          "nope.jsonl not found; give NAME=PATH of an existing JSONL file"),
    "task-file-empty": (lambda w, t: ["evaluate", "--model", w.model, "--tasks", "piqa=" + _file(t, "e.jsonl", "\n"), "--json", "OUT", "-q"],
                        "e.jsonl has no items; a task file holds one JSON object per line"),
    "demo-empty-prompt": (lambda w, t: ["demo", "--model", w.model, "--prompt", "  ", "-o", "OUT", "-q"], "--prompt is empty"),
    "thr-projections-not-list": (lambda w, t: ["build", "--model", w.model, "--thresholds", _thr(w, t, lambda d: d.update(projections=3)), "-o", "OUT"],
                                 '"projections" must be a list'),
    # Hugging Face folders
    "hf-config-list": (lambda w, t: ["build", "--model", _hf(t, "[1, 2]"), "-o", "OUT"], "must be a JSON object"),
    "hf-config-binary": (lambda w, t: ["build", "--model", _hf(t, BINARY), "-o", "OUT"], "not valid JSON"),
    "hf-config-huge": (lambda w, t: ["build", "--model", _hf(t, '{"model_type": "rwkv", "vocab_size": 50000, "hidden_size": 768, "num_hidden_layers": 100000}'),
                                     "-o", "OUT"], "would need"),
    "hf-config-bad-type": (lambda w, t: ["build", "--model", _hf(t, '{"model_type": "opt", "vocab_size": 50, "hidden_size": "big", "num_hidden_layers": 2, '
                                                                 '"num_attention_heads": 2, "ffn_dim": 8, "max_position_embeddings": 8}'), "-o", "OUT"],
                           "d_model must be a positive integer"),
    "hf-config-missing-key": (lambda w, t: ["build", "--model", _hf(t, '{"model_type": "rwkv", "vocab_size": 50}'), "-o", "OUT"], "missing key 'hidden_size'"),
    "hf-unknown-arch": (lambda w, t: ["build", "--model", _hf(t, '{"model_type": "llama"}'), "-o", "OUT"], "unknown architecture"),
    # BlinkDL checkpoints and eventllm safetensors
    "pth-pickle-payload": (lambda w, t: ["build", "--model", _pth_payload(t), "-o", "OUT"], "cannot be read as a PyTorch weights file"),
    "pth-garbage": (lambda w, t: ["build", "--model", _file(t, "x.pth", BINARY), "-o", "OUT"], "cannot be read as a PyTorch weights file"),
    "safetensors-huge-config": (lambda w, t: ["build", "--model", _huge_safetensors(t), "-o", "OUT"], "would need"),
    # graph folders
    "graph-no-arrays": (lambda w, t: ["map", _graph_with(w, t, lambda s, g: (g / "arrays.npz").unlink()), "-o", "OUT"], "has no arrays.npz"),
    "graph-json-binary": (lambda w, t: ["map", _graph_with(w, t, lambda s, g: BINARY), "-o", "OUT"], "not valid JSON"),
    "graph-json-missing-key": (lambda w, t: ["map", _graph_with(w, t, lambda s, g: s.pop("output") and None), "-o", "OUT"], "missing key 'output'"),
    "graph-processes-not-list": (lambda w, t: ["map", _graph_with(w, t, lambda s, g: s.update(processes={})), "-o", "OUT"], "'processes' must be a list"),
    "graph-bad-process": (lambda w, t: ["map", _graph_with(w, t, lambda s, g: s["processes"][0].pop("vars")), "-o", "OUT"], "malformed graph structure"),
    "graph-unknown-kind": (lambda w, t: ["map", _graph_with(w, t, lambda s, g: s["processes"][0].update(kind="magic")), "-o", "OUT"], "unknown kind 'magic'"),
    "graph-is-a-file": (lambda w, t: ["map", _file(t, "g", "x"), "-o", "OUT"], "is not a graph folder"),
    # mapping files
    "mapping-binary": (lambda w, t: ["simulate", w.graph, "--mapping", _file(t, "m.json", BINARY), "--token-ids", "1,2", "--json", "OUT"], "not valid JSON"),
    "mapping-core-out-of-range": (lambda w, t: ["simulate", w.graph, "--mapping", _mapping_with(w, t, lambda d: d["shards"][0].update(core=10**9)),
                                                "--token-ids", "1,2", "--json", "OUT"], "is on core 1000000000"),
    "mapping-traffic-lengths": (lambda w, t: ["simulate", w.graph, "--mapping", _mapping_with(w, t, lambda d: d["traffic"]["src"].append(0)),
                                              "--token-ids", "1,2", "--json", "OUT"], "lists of one length"),
    "mapping-huge-topology": (lambda w, t: ["simulate", w.graph, "--mapping", _mapping_with(w, t, lambda d: d["topology"].update(rows=10**5, cols=10**5)),
                                            "--token-ids", "1,2", "--json", "OUT"], "cores is more than"),
    "mapping-shards-not-list": (lambda w, t: ["simulate", w.graph, "--mapping", _mapping_with(w, t, lambda d: d.update(shards=5)),
                                              "--token-ids", "1,2", "--json", "OUT"], "'shards' must be a list"),
    # topologies
    "topology-10000x10000": (lambda w, t: ["map", w.graph, "--topology", "seneca:10000x10000", "-o", "OUT"], "cores is more than"),
    "topology-toml-binary": (lambda w, t: ["map", w.graph, "--topology", _file(t, "t.toml", BINARY), "-o", "OUT"], "t.toml"),
    "topology-toml-directory": (lambda w, t: ["map", w.graph, "--topology", str(t), "-o", "OUT"], "is a folder, not a topology file"),
    "topology-toml-unknown-key": (lambda w, t: ["map", w.graph, "--topology", _file(t, "t.toml", 'colour = "red"\n[core]\nmemory_bytes=1\nword_bits=8\nnpe=1\nclock_hz=1\n'),
                                                "-o", "OUT"], "unknown key(s) colour"),
    "topology-toml-huge-mesh": (lambda w, t: ["map", w.graph, "--topology", _file(t, "t.toml", "[core]\nmemory_bytes=65536\nword_bits=8\nnpe=1\nclock_hz=1\n"
                                                                                  "[mesh]\nrows=100000\ncols=100000\n"), "-o", "OUT"], "cores is more than"),
    "topology-toml-huge-custom": (lambda w, t: ["map", w.graph, "--topology", _file(t, "t.toml", "[core]\nmemory_bytes=65536\nword_bits=8\nnpe=1\nclock_hz=1\n"
                                                                                    '[noc]\nkind="custom"\n[custom]\ncores=1000000\nlinks=[[0, 1]]\n'), "-o", "OUT"],
                                  "would need"),
    "topology-toml-name-not-string": (lambda w, t: ["map", w.graph, "--topology", _file(t, "t.toml", "name = 5\n[core]\nmemory_bytes=1\nword_bits=8\nnpe=1\nclock_hz=1\n"),
                                                    "-o", "OUT"], "name must be a string"),
    # cost tables
    "costs-binary": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--costs", _file(t, "c.toml", BINARY), "--token-ids", "1", "--json", "OUT"], "c.toml"),
    "costs-table-is-number": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--costs", _file(t, "c.toml", COSTS_OK.split("[energy_j]")[0] + "energy_j = 5\n"),
                                            "--token-ids", "1", "--json", "OUT"], "energy_j must be a table"),
    "costs-negative": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--costs", _file(t, "c.toml", COSTS_OK.replace("synop = ", "synop = -1 #", 1)),
                                     "--token-ids", "1", "--json", "OUT"], "must be a non-negative number"),
    "costs-unknown-preset": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--costs", "nope", "--token-ids", "1", "--json", "OUT"], "unknown cost preset"),
    # training configs
    "train-binary": (lambda w, t: ["train", _file(t, "c.toml", BINARY), "-o", "OUT"], "c.toml"),
    "train-folder": (lambda w, t: ["train", str(t), "-o", "OUT"], "is a folder, not a config file; pass the config file (a .toml file)"),
    "recipe-unknown-key": (lambda w, t: ["calibrate", "--config", _file(t, "r.toml", 'method = "finetune"\ncolour = 1\n'),
                                         "--model", w.model, "--data", w.text, "-o", "OUT"],
                           "'colour' is not an option of `eventllm calibrate`"),
    "recipe-bad-value": (lambda w, t: ["calibrate", "--config", _file(t, "r.toml", "max_ppl_increase = -1\n"), "--model", w.model,
                                       "--data", w.text, "-o", "OUT"], "argument --max-ppl-increase"),
    "recipe-missing": (lambda w, t: ["calibrate", "--config", str(t / "none.toml"), "--model", w.model, "--data", w.text,
                                     "-o", "OUT"], "none.toml"),
    "train-unknown-key": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="colour = 1", n_layer=2)), "-o", "OUT"], "unknown key 'colour'"),
    "train-unknown-model-key": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="", n_layer=2) + "bogus_key = 1\n"), "-o", "OUT"],
                                "[model] has an unknown key 'bogus_key'; a rwkv4 model takes"),
    "train-missing-key": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="", n_layer=2).replace('arch = "rwkv4"\n', "")), "-o", "OUT"],
                          "missing key 'arch'"),
    "train-context-0": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="context = 0", n_layer=2)), "-o", "OUT"], "context = 0"),
    "train-lr-string": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra='lr = "fast"', n_layer=2)), "-o", "OUT"], "lr = 'fast'"),
    "train-unwrap-share-above-1": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="unwrap = 2", n_layer=2)), "-o", "OUT"],
                                   "unwrap = 2 must be true, false or the share"),
    "train-huge-model": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="", n_layer=10**7)), "-o", "OUT"], "would need"),
    "train-unknown-arch": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="", n_layer=2).replace("rwkv4", "gpt")), "-o", "OUT"], "arch = 'gpt'"),
    # numeric options, refused by the parser
    "calibrate-context-0": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--context", "0", "-o", "OUT"], "argument --context"),
    "calibrate-context-negative": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--context", "-5", "-o", "OUT"], "argument --context"),
    "calibrate-tokens-0": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--tokens", "0", "-o", "OUT"], "argument --tokens"),
    "calibrate-target-sparsity-1.5": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--target-sparsity", "1.5", "-o", "OUT"],
                                      "argument --target-sparsity"),
    "calibrate-max-ppl-increase-nan": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--max-ppl-increase", "nan", "-o", "OUT"],
                                       "argument --max-ppl-increase"),
    # calibrate --method finetune: refused before anything is trained
    "finetune-no-output-model": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text,
                                               "--target-sparsity", "0.5", "-o", "OUT"], "pass --output-model"),
    "finetune-no-goal": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text,
                                       "--output-model", str(t / "ft.safetensors"), "-o", "OUT"], "needs a goal"),
    "finetune-output-model-not-safetensors": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text,
                                                            "--target-sparsity", "0.5", "--output-model", str(t / "ft.pt"), "-o", "OUT"],
                                              "ending in .safetensors"),
    "finetune-output-model-is-output": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text,
                                                      "--target-sparsity", "0.5", "--output-model", str(t / "a.safetensors"),
                                                      "-o", str(t / "a.safetensors")], "are the same file"),
    "finetune-check-on-train": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text, "--split", "train",
                                              "--target-sparsity", "0.5", "--output-model", str(t / "ft.safetensors"), "-o", "OUT"],
                                "use --split valid"),
    "grad-tokens-without-gradient": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--grad-tokens", "512", "-o", "OUT"],
                                     "--grad-tokens sets the data of --scores gradient; drop it, or pass --scores gradient"),
    "grad-tokens-below-a-window": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--split", "all", "--scores", "gradient",
                                                 "--grad-tokens", "10", "--context", "64", "-o", "OUT"], "--grad-tokens 10 is less than one window"),
    "thr-gradient-without-scales": (lambda w, t: ["evaluate", "--model", w.model, "--thresholds",
                                                  _thr(w, t, lambda d: d.update(scores="gradient")), "--data", w.text],
                                    "\"channel_scales\" go with \"scores\": \"gradient\""),
    "finetune-wina": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text, "--scores", "wina",
                                    "--target-sparsity", "0.5", "--output-model", str(t / "ft.safetensors"), "-o", "OUT"], "drop --scores wina"),
    "finetune-weight-bits": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text, "--weight-bits", "8",
                                           "--target-sparsity", "0.5", "--output-model", str(t / "ft.safetensors"), "-o", "OUT"],
                             "drop --weight-bits"),
    "finetune-bad-device": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text, "--device", "abacus",
                                          "--target-sparsity", "0.5", "--output-model", str(t / "ft.safetensors"), "-o", "OUT"],
                            "is not a device"),
    "finetune-lr-0": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text, "--lr", "0",
                                    "--target-sparsity", "0.5", "--output-model", str(t / "ft.safetensors"), "-o", "OUT"], "argument --lr"),
    "finetune-weight-average-1": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text,
                                                "--weight-average", "1", "--target-sparsity", "0.5", "--output-model",
                                                str(t / "ft.safetensors"), "-o", "OUT"], "a decay per step in [0, 1)"),
    "weight-average-without-finetune": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--weight-average", "0.99",
                                                      "-o", "OUT"], "--weight-average is for --method finetune"),
    "finetune-teacher-other-tokenizer": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text,
                                                       "--teacher", "zoo:rwkv4-tiny", "--target-sparsity", "0.5", "--output-model",
                                                       str(t / "ft.safetensors"), "-o", "OUT"], "reads text with another tokenizer"),
    "teacher-without-finetune": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--teacher", w.model, "-o", "OUT"],
                                 "--teacher is for --method finetune"),
    "finetune-context-too-long": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--context", "100000", "-q",
                                                "--data", _file(t, "book.txt", (TEXT[:200] + "\n\n") * 40), "--target-sparsity", "0.5",
                                                "--output-model", str(t / "ft.safetensors"), "-o", "OUT"],
                                  "tokens of training text"),
    "calibrate-output-model-without-finetune": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text,
                                                              "--output-model", str(t / "ft.safetensors"), "-o", "OUT"],
                                                "--output-model is for --method finetune"),
    "calibrate-steps-without-finetune": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--steps", "5", "-o", "OUT"],
                                         "--steps is for --method finetune"),
    "calibrate-search-two-goals": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--target-sparsity", "0.5",
                                                 "--max-ppl-increase", "0.01", "-o", "OUT"], "only one of"),
    "calibrate-search-unknown": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--search", "best", "-o", "OUT"],
                                 "argument --search: invalid choice: 'best'"),
    "calibrate-levels-1": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--search", "greedy", "--levels", "1",
                                         "-o", "OUT"], "argument --levels"),
    "generate-temperature-nan": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--temperature", "nan", "--json", "OUT"], "argument --temperature"),
    "generate-temperature-negative": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--temperature", "-1", "--json", "OUT"], "argument --temperature"),
    "generate-top-p-0": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--top-p", "0", "--json", "OUT"], "argument --top-p"),
    "generate-top-p-negative": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--top-p", "-0.5", "--json", "OUT"], "argument --top-p"),
    "generate-top-p-above-1": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--top-p", "1.5", "--json", "OUT"], "argument --top-p"),
    "generate-max-tokens-negative": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--max-tokens", "-1", "--json", "OUT"], "argument --max-tokens"),
    "generate-max-tokens-text": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--max-tokens", "many", "--json", "OUT"], "not an integer"),
    "generate-empty-prompt": (lambda w, t: ["generate", "--model", w.model, "--prompt", "", "--json", "OUT"], "--prompt is empty"),
    "generate-blank-prompt": (lambda w, t: ["generate", "--model", w.model, "--prompt", " \n", "--json", "OUT"], "--prompt is empty"),
    "generate-thresholds-and-no-thresholds": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--thresholds", str(w.thr),
                                                            "--no-thresholds", "--json", "OUT"], "contradict each other"),
    "generate-costs-on-torch": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--backend", "torch", "--costs", "seneca",
                                              "--json", "OUT"], "drop it with --backend torch"),
    "generate-greedy-and-temperature": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--greedy", "--temperature", "0.5",
                                                      "--json", "OUT"], "--greedy decodes without sampling"),
    "generate-greedy-and-top-p": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--greedy", "--top-p", "0.5",
                                                "--json", "OUT"], "--greedy decodes without sampling"),
    "evaluate-max-tokens-0": (lambda w, t: ["evaluate", "--model", w.model, "--data", w.text, "--max-tokens", "0", "--json", "OUT"], "argument --max-tokens"),
    "build-tokens-0": (lambda w, t: ["build", "--model", w.model, "--tokens", "0", "-o", "OUT"], "argument --tokens"),
    "simulate-max-tokens-0": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--max-tokens", "0", "--json", "OUT"], "argument --max-tokens"),
    "demo-max-tokens-0": (lambda w, t: ["demo", "--max-tokens", "0", "-o", "OUT"], "argument --max-tokens"),
    "train-steps-0": (lambda w, t: ["train", "c.toml", "--steps", "0", "-o", "OUT"], "argument --steps"),
    "map-seed-negative": (lambda w, t: ["map", w.graph, "--seed", "-1", "-o", "OUT"], "argument --seed"),
    # zero-shot task files
    "task-file-binary": (lambda w, t: ["evaluate", "--model", w.model, "--tasks", "lambada=" + _file(t, "l.jsonl", BINARY), "--json", "OUT"],
                         "l.jsonl: not UTF-8 text"),
    # text that is not text: a binary file, or a .xz that is cut short, as --data
    "data-binary": (lambda w, t: ["evaluate", "--model", w.model, "--data", _file(t, "book.txt", BINARY), "--json", "OUT"],
                    "book.txt: not UTF-8 text"),
    "data-xz-truncated": (lambda w, t: ["evaluate", "--model", w.model, "--data",
                                        _file(t, "book.txt.xz", _truncated_xz(TEXT * 50)), "--json", "OUT"],
                          "book.txt.xz: cannot be read"),
    "task-file-is-a-folder": (lambda w, t: ["evaluate", "--model", w.model, "--tasks", f"lambada={t}", "--json", "OUT"], "is a folder"),
    # what simulate runs
    "simulate-token-id-outside-vocab-trace": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--engine", "trace", "--token-ids", "1,99999",
                                                            "--json", "OUT"], "99999 is outside the graph's vocabulary (0..255)"),
    "simulate-token-ids-empty": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "", "--json", "OUT"],
                                 "--token-ids must be comma-separated integers, got ''"),
    "simulate-data-and-token-ids": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--data", w.text, "--token-ids", "1,2",
                                                  "--json", "OUT"], "pass only one of --data, --token-ids and --prompt"),
    "simulate-prompt-and-token-ids": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--prompt", "hi", "--token-ids", "1,2",
                                                    "--json", "OUT"], "--token-ids and --prompt both give the tokens"),
    "simulate-segments-without-data": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "--segments", "3",
                                                     "--json", "OUT"], "--segments cuts the text of --data"),
    "simulate-empty-text": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--model", w.model, "--data", _file(t, "empty.txt", ""),
                                          "--max-tokens", "32", "--json", "OUT", "-q"], "empty.txt: no text in split 'all'"),
    "evaluate-blank-text": (lambda w, t: ["evaluate", "--model", w.model, "--data", _file(t, "blank.txt", " \n\n  \n"), "--json", "OUT", "-q"],
                            "blank.txt: no text in split 'all'"),
    "evaluate-max-tokens-1": (lambda w, t: ["evaluate", "--model", w.model, "--data", w.text, "--max-tokens", "1", "--json", "OUT", "-q"],
                              "--max-tokens 1: a text needs at least 2 tokens"),
    "simulate-lava-blocks-without-lava": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "--lava-blocks", "fused",
                                                        "--json", "OUT"], "--lava-blocks fused chooses how the graph runs on lava-nc"),
    "generate-lava-blocks-without-lava": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--lava-blocks", "fused", "--json", "OUT"],
                                          "add --backend lava"),
    "generate-topology-with-torch": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--backend", "torch", "--topology", "bogus",
                                                   "--json", "OUT"], "--topology is where the simulator maps the model"),
    "map-fill-tiny": (lambda w, t: ["map", w.graph, "--fill", "1e-9", "-o", "OUT", "--no-heatmap"], "or a larger --fill"),
    # precision options that quantise nothing
    "quantize-without-bits": (lambda w, t: ["evaluate", "--model", w.model, "--data", w.text, "--quantize", "att.key", "--json", "OUT"],
                              "--quantize says how to quantise, but nothing is quantised at 16 bits"),
    "quant-method-at-16-bits": (lambda w, t: ["build", "--model", w.model, "--quant-method", "rtn", "--weight-bits", "16", "-o", "OUT"],
                                "--quant-method says how to quantise, but nothing is quantised at 16 bits"),
    "info-thresholds-without-model": (lambda w, t: ["info", "--thresholds", str(w.thr)], "add --model"),
    # heat maps
    "map-heatmap-unknown-format": (lambda w, t: ["map", w.graph, "--heatmap", str(t / "heat.xyz"), "-o", "OUT"], "cannot draw a .xyz picture"),
    "map-heatmap-and-no-heatmap": (lambda w, t: ["map", w.graph, "--heatmap", str(t / "heat.png"), "--no-heatmap", "-o", "OUT"],
                                   "drop one of them"),
    # devices torch does not know
    "evaluate-bad-device": (lambda w, t: ["evaluate", "--model", w.model, "--data", w.text, "--device", "abacus", "--json", "OUT"],
                            "--device 'abacus' is not a device"),
    "simulate-bad-device": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--data", w.text, "--max-tokens", "8",
                                          "--device", "abacus", "--json", "OUT"], "--device 'abacus' is not a device"),
    "train-into-a-file": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="", n_layer=2)), "-o", _file(t, "afile", "keep me")],
                          "is a file; give a folder name"),
    "train-bad-device": (lambda w, t: ["train", _file(t, "c.toml", TRAIN.format(extra="", n_layer=2)), "--device", "abacus", "-o", "OUT"],
                         "--device 'abacus' is not a device"),
    # outputs
    # outputs that cannot be written, refused before the work (no progress bar or status line before the error)
    "evaluate-json-is-a-folder": (lambda w, t: ["evaluate", "--model", w.model, "--data", w.text, "--json", str(_foreign(t))],
                                  "is a folder; give a file name for the output"),
    "calibrate-output-is-a-folder": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--split", "all", "-o", str(_foreign(t))],
                                     "is a folder; give a file name for the output"),
    "finetune-output-model-under-a-file": (lambda w, t: ["calibrate", "--method", "finetune", "--model", w.model, "--data", w.text,
                                                         "--target-sparsity", "0.5", "--output-model", w.text + "/ft.safetensors", "-o", "OUT"],
                                           "text.txt is a file); choose another output path"),
    "generate-json-is-a-folder": (lambda w, t: ["generate", "--model", w.model, "--prompt", "a", "--max-tokens", "2", "--json", str(_foreign(t))],
                                  "is a folder; give a file name for the output"),
    "simulate-json-is-a-folder": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "--json", str(_foreign(t))],
                                  "is a folder; give a file name for the output"),
    "simulate-report-under-a-file": (lambda w, t: ["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "--report", w.text + "/rep",
                                                   "--json", "OUT"], "text.txt is a file); choose another output path"),
    "map-heatmap-under-a-file": (lambda w, t: ["map", w.graph, "--heatmap", w.text + "/heat.png", "-o", "OUT"],
                                 "text.txt is a file); choose another output path"),
    # where the permission bits say yes (root) but no file can be made: /proc
    "map-heatmap-in-proc": (lambda w, t: ["map", w.graph, "--heatmap", "/proc/eventllm-none/heat.png", "-o", "OUT"],
                            "a file cannot be made in /proc"),
    "calibrate-output-in-proc": (lambda w, t: ["calibrate", "--model", w.model, "--data", w.text, "--tokens", "64", "-o",
                                               "/proc/eventllm-none/thr.json"], "a file cannot be made in /proc"),
    "build-into-foreign-folder": (lambda w, t: ["build", "--model", w.model, "-o", str(_foreign(t))], "not an eventllm graph"),
    "build-into-a-file": (lambda w, t: ["build", "--model", w.model, "-o", _file(t, "afile", "keep me")], "is a file"),
}


def _huge_safetensors(tmp) -> str:
    import torch
    from safetensors.torch import save_file

    cfg = json.dumps({"vocab_size": 50000, "d_model": 1024, "n_layer": 100000})
    save_file({"x": torch.zeros(1)}, str(tmp / "huge.safetensors"), metadata={"format": "eventllm", "arch": "rwkv4", "config": cfg})
    return str(tmp / "huge.safetensors")


def _foreign(tmp) -> Path:
    folder = tmp / "mywork"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("precious")
    return folder


def _snapshot(path: Path) -> dict:
    """Every file under `path` (or `path` itself) with its bytes; {} when nothing is there."""
    if path.is_file():
        return {".": path.read_bytes()}
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return {}


def run(argv: list[str], capsys) -> tuple[int, list[str], float]:
    start = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse refuses an option
        rc = e.code
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip()], seconds


# one case per file format also runs with an old output in place, which must stay byte-identical
WITH_OLD_OUTPUT = ("thr-binary", "graph-no-arrays", "mapping-binary", "topology-10000x10000", "costs-binary", "train-binary",
                   "hf-config-huge", "generate-top-p-0", "map-heatmap-in-proc")


@pytest.mark.parametrize("case, with_old_output", [(c, False) for c in CASES] + [(c, True) for c in WITH_OLD_OUTPUT])
def test_bad_input_one_line_exit_2_nothing_written(case, with_old_output, w, tmp_path, capsys):
    make, message = CASES[case]
    out = tmp_path / "out" / "result"
    argv = [str(out) if a == "OUT" else a for a in make(w, tmp_path)]
    target = next((Path(argv[i + 1]) for i, a in enumerate(argv) if a in ("-o", "--json")), out)
    if with_old_output:  # an old graph folder for build, an old file for the others
        target.parent.mkdir(parents=True, exist_ok=True)
        if argv[0] == "build":
            target.mkdir()
            (target / "graph.json").write_text('{"format": "eventllm-graph", "old": true}')
            (target / "arrays.npz").write_bytes(b"old arrays")
        else:
            target.write_text("old output\n")
    before = _snapshot(target)
    siblings = set(target.parent.iterdir()) if target.parent.exists() else set()
    rc, lines, seconds = run(argv, capsys)
    assert rc == 2, lines
    assert len(lines) == 1 and ": error: " in lines[0] and lines[0].startswith("eventllm"), lines
    assert message in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    assert seconds < 10, f"{case} took {seconds:.1f} s before refusing"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < 2 * 2**30
    assert _snapshot(target) == before
    after = set(target.parent.iterdir()) if target.parent.exists() else set()
    assert after == siblings, f"left behind: {sorted(p.name for p in after - siblings)}"
    if case == "pth-pickle-payload":
        assert not (tmp_path / "payload-ran").exists(), "the pickle payload ran"


@pytest.mark.parametrize("temperature", [1e-30, 1e-40, 1e-320])
def test_a_vanishing_temperature_decodes_greedily(temperature):
    """(1e-320 overflowed the logits to inf, and torch.multinomial raised a RuntimeError traceback.)"""
    import torch

    from eventllm.generate.sampling import Sampling, next_token

    logits = torch.tensor([1.0, 5.0, -3.0, 4.5])
    assert next_token(logits, Sampling(temperature, 0.9, 1), torch.Generator().manual_seed(0)) == 1


def test_generate_with_a_vanishing_temperature(w, capsys):
    rc, lines, _ = run(["generate", "--model", w.model, "--prompt", "a", "--backend", "torch", "--max-tokens", "2", "--temperature", "1e-320",
                        "-q"], capsys)
    assert rc == 0 and not any("Traceback" in line for line in lines), lines


def test_generate_with_stdin_closed(w, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    rc, lines, _ = run(["generate", "--model", w.model, "--backend", "torch"], capsys)
    assert rc == 2 and len(lines) == 1 and "standard input" in lines[0]


def test_generate_with_stdin_closed_subprocess(w):
    res = subprocess.run([sys.executable, "-m", "eventllm", "generate", "--model", w.model], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, cwd=ROOT, timeout=60, preexec_fn=lambda: os.close(0))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("eventllm generate: error:")


def test_allow_partial_runs_missing_sites_at_zero(w, tmp_path, capsys):
    thr = _thr(w, tmp_path, lambda d: d["thresholds"][1].pop("att.key"))
    out = tmp_path / "graph"
    rc, lines, _ = run(["build", "--model", w.model, "--thresholds", thr, "--allow-partial", "--tokens", "4", "-o", str(out)], capsys)
    assert rc == 0
    assert any("θ = 0" in line and "layer 1 att.key" in line for line in lines)
    assert (out / "graph.json").exists()


def test_train_on_a_corpus_shorter_than_a_window(tmp_path, capsys):
    _file(tmp_path, "c.txt", TEXT)  # one paragraph: its valid split is empty
    cfg = _file(tmp_path, "c.toml", TRAIN.format(extra="vocab_size = 300\ncontext = 16", n_layer=1))
    rc, lines, _ = run(["train", cfg, "--steps", "1", "-q", "-o", str(tmp_path / "out")], capsys)
    assert rc == 2 and len(lines) == 1, lines
    assert "c.txt: no text in split 'valid' (the files, or their valid share, hold only blanks)" in lines[0]


def test_build_force_replaces_a_foreign_folder(w, tmp_path, capsys):
    folder = _foreign(tmp_path)
    rc, _, _ = run(["build", "--model", w.model, "--tokens", "4", "--force", "-o", str(folder)], capsys)
    assert rc == 0 and (folder / "graph.json").exists() and not (folder / "notes.txt").exists()


# --- interrupted writes: the old output survives byte for byte ---------------------------------------------
INTERRUPTED = {
    "calibrate": (lambda w, o: ["calibrate", "--model", w.model, "--data", w.text, "--split", "all", "--tokens", "64", "--context", "16",
                                "--check-tokens", "200", "-q", "-o", o], "file"),
    "build": (lambda w, o: ["build", "--model", w.model, "--tokens", "4", "-o", o], "folder"),
    "map": (lambda w, o: ["map", w.graph, "--no-heatmap", "-o", o], "file"),
    "simulate-json": (lambda w, o: ["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "-q", "--json", o], "file"),
    "simulate-report": (lambda w, o: ["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "-q", "--report", o], "folder"),
    "evaluate-json": (lambda w, o: ["evaluate", "--model", w.model, "--data", w.text, "-q", "--json", o], "file"),
}


@pytest.mark.parametrize("command", list(INTERRUPTED))
def test_interrupted_write_keeps_old_output(command, w, tmp_path, capsys, monkeypatch):
    make, kind = INTERRUPTED[command]
    out = tmp_path / "old"
    if kind == "file":
        out.write_text("old output\n")
    else:
        out.mkdir()
        (out / "graph.json").write_text('{"format": "eventllm-graph"}')  # an old graph folder (build may replace it)
        (out / "simulation.json").write_text("old")
    before = _snapshot(out)
    real = Path.write_text

    def half_then_interrupt(self, text, *a, **k):  # Ctrl-C in the middle of writing a file
        real(self, text[: len(text) // 2], *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_then_interrupt)
    rc, lines, _ = run(make(w, str(out)), capsys)
    monkeypatch.undo()
    assert rc == 130 and lines[-1].endswith("interrupted")
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["old"], "a temporary file or folder was left behind"


def test_sigint_during_calibrate_leaves_thresholds_intact(tmp_path):
    if not (DATA / "gutenberg").exists():
        pytest.skip(f"shared data not found at {DATA}")
    out = tmp_path / "thr.json"
    out.write_bytes(b'{"old": "thresholds"}\n')
    before = out.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "eventllm", "calibrate", "--model", "zoo:rwkv4-tiny", "--data", str(DATA / "gutenberg"),
                             "-o", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # 130 from main; on a loaded machine CPython at times ends an interrupted run by re-raising SIGINT on
    # itself (-2), which a shell reports as 130 too
    assert proc.returncode in (130, -signal.SIGINT), err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "eventllm calibrate: interrupted"
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["thr.json"]


def test_train_on_a_valid_share_shorter_than_a_window(tmp_path, capsys):
    _file(tmp_path, "c.txt", "The quick brown fox jumps over the lazy dog.\n\n" * 60)  # short paragraphs: a few in valid
    cfg = _file(tmp_path, "c.toml", TRAIN.format(extra="vocab_size = 300\ncontext = 256", n_layer=1))
    rc, lines, _ = run(["train", cfg, "--steps", "1", "-q", "-o", str(tmp_path / "out")], capsys)
    assert rc == 2 and len(lines) == 1, lines
    assert "c.txt: the valid split has" in lines[0] and "too few for windows of context = 256" in lines[0]


def test_costs_of_another_topology_are_named(w, tmp_path, capsys):
    """Loihi 2 costs on a SENECA mapping is a what-if the simulator runs, but says so (the JSON names both)."""
    rc = main(["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "--costs", "loihi2", "-q", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr()
    assert rc == 0
    assert "cost table 'loihi2' is for topology 'loihi2', the mapping is onto 'seneca'" in out.err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert (doc["costs"], doc["topology"]) == ("loihi2", "seneca")
    assert main(["simulate", w.graph, "--mapping", w.mapping, "--token-ids", "1,2", "-q"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_a_per_neuron_graph_traced_with_another_model_is_one_line(w, tmp_path, capsys):
    """The trace engine takes a per-neuron graph's θ vectors into --model: another model (other layers) is refused
    before its sites are looked up, and a hand-edited graph whose θ vector no score bound gives is named."""
    from eventllm.models import RWKV, RWKVConfig
    from eventllm.models.checkpoints import save_eventllm
    from eventllm.process.graph import ProcessGraph

    thr = _thr(w, tmp_path, lambda d: d.update(scores="wina"))
    g = tmp_path / "g"
    assert main(["build", "--model", w.model, "--thresholds", thr, "--tokens", "4", "-o", str(g)]) == 0
    other = save_eventllm(RWKV(RWKVConfig(vocab_size=256, d_model=32, n_layer=1, d_ffn=64)).randomize(seed=6),
                          tmp_path / "other" / "model.safetensors")
    capsys.readouterr()
    for model, message in [(str(other), "pass the graph's model with --model"), (w.model, "do not fit this model's site")]:
        if model == w.model:  # a hand edit: θ vector > 0 under a score bound of 0, which no θ / g gives
            graph = ProcessGraph.load(g)
            graph["L0.att.key.threshold"].attrs["score_theta"] = 0.0
            graph.save(g)
        rc, lines, _ = run(["simulate", str(g), "--mapping", w.mapping, "--data", w.text, "--split", "all", "--model", model,
                            "--engine", "trace", "-q"], capsys)
        assert rc == 2 and len(lines) == 1 and message in lines[0], lines
