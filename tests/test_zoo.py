"""The shipped models: they load, they are far better than a unigram model, and their recipe runs."""

import json
import math
from collections import Counter

import pytest
import torch

from eventllm.evaluate.perplexity import perplexity
from eventllm.models.registry import load_model, zoo_names


@pytest.mark.parametrize("name", ["rwkv4-tiny", "opt-tiny"])
def test_zoo_model_beats_unigram_on_validation_text(name, data_dir):
    from eventllm.data import read_texts

    loaded = load_model(f"zoo:{name}")
    tok = loaded.tokenizer
    train = Counter(tok.encode(read_texts(data_dir / "gutenberg", "train")[1]))
    ids = tok.encode(read_texts(data_dir / "gutenberg", "valid")[1])[:1500]
    total = sum(train.values())
    unigram_nll = -sum(math.log((train[i] + 1) / (total + tok.vocab_size)) for i in ids[1:]) / (len(ids) - 1)
    res = perplexity(loaded.model, ids)
    assert res.ppl < 0.5 * math.exp(unigram_nll)


def test_zoo_lists_both_models():
    assert {"rwkv4-tiny", "opt-tiny"} <= set(zoo_names())


def test_rwkv_zoo_generates_english_words():
    loaded = load_model("zoo:rwkv4-tiny")
    m, tok = loaded.model, loaded.tokenizer
    ids = tok.encode("The old man looked at the sea and")
    with torch.no_grad():
        logits, state = m(torch.tensor([ids]))
        out = []
        for _ in range(20):
            t = int(logits[0, -1].argmax())
            out.append(t)
            logits, state = m(torch.tensor([[t]]), state)
    words = tok.decode(out).split()
    common = {"the", "and", "of", "to", "a", "he", "his", "was", "in", "that", "it", "with", "had", "as", "at", "her", "she"}
    assert len(words) >= 8 and any(w.strip(".,;").lower() in common for w in words)


def tiny_train_config(tmp_path, data_dir, name: str, steps: int, warmup: int, extra: str = "", d_model: int = 32) -> str:
    """A training config of a 2-layer RWKV on Poe's works (a few seconds on the CPU); `extra` adds TOML keys."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'''
name = "{name}"
arch = "rwkv4"
corpus = "{data_dir / 'gutenberg' / 'poe_works.txt'}"
tokenizer = "{tmp_path / 'tok' / 'tokenizer.json'}"
vocab_size = 300
context = 32
batch_size = 2
steps = {steps}
eval_every = 2
eval_batches = 1
warmup = {warmup}
{extra}
[model]
d_model = {d_model}
n_layer = 2
d_ffn = 64
''')
    return str(cfg)


def test_training_recipe_smoke_run(tmp_path, data_dir):
    from eventllm.cli import main

    cfg = tiny_train_config(tmp_path, data_dir, "smoke", steps=4, warmup=2)
    assert main(["train", cfg, "-o", str(tmp_path / "out"), "-q"]) == 0
    loaded = load_model(str(tmp_path / "out" / "model.safetensors"))
    assert loaded.model.config.n_layer == 2 and loaded.tokenizer.vocab_size <= 300
    assert (tmp_path / "out" / "train_log.json").exists()


def test_training_log_records_the_learning_rate_the_steps_used(tmp_path, data_dir, monkeypatch):
    """Under a time budget the learning rate decays over the time spent; the log holds that rate, not the rate the
    step count alone would give (which stays near the peak when `steps` is a loose upper bound). The training loop's
    clock is a fake one (0.05 s per reading), so that a loaded machine cannot change what is measured."""
    import types

    import eventllm.training as training
    from eventllm.cli import main
    from eventllm.training import load_train_config, lr_at

    readings = iter(range(10**9))
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: 0.05 * next(readings)))
    cfg = tiny_train_config(tmp_path, data_dir, "budget", steps=100000, warmup=1, extra="lr = 1e-3\nmin_lr = 0\n")
    assert main(["train", cfg, "-o", str(tmp_path / "out"), "--max-seconds", "3", "-q"]) == 0
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    last = log["history"][-1]
    by_steps = lr_at(last["step"], load_train_config(cfg))
    assert by_steps > 0.99e-3  # a few dozen of 100,000 steps: the step schedule has hardly moved
    assert last["lr"] < 0.05e-3  # the time schedule, nearly all of the 3 s spent, has (cosine: < 5% of the peak after 85%)


def test_training_continues_from_init_weights(tmp_path, data_dir, capsys):
    """`init = FILE` starts from those weights (continued training); a model of another shape is one clear error."""
    from eventllm.cli import main

    def config(name, extra="", d_model=32):
        return tiny_train_config(tmp_path, data_dir, name, steps=2, warmup=1, extra="dropout = 0.0\n" + extra, d_model=d_model)

    assert main(["train", config("a"), "-o", str(tmp_path / "a"), "-q"]) == 0
    first = load_model(str(tmp_path / "a" / "model.safetensors")).model.state_dict()
    # a learning rate of 1e-12 leaves the weights where init put them (moved by ~1e-12 at most)
    assert main(["train", config("b", f'init = "{tmp_path / "a" / "model.safetensors"}"\nlr = 1e-12\nmin_lr = 0'),
                 "-o", str(tmp_path / "b"), "-q"]) == 0
    second = load_model(str(tmp_path / "b" / "model.safetensors")).model.state_dict()
    assert all(torch.allclose(first[k], second[k], rtol=0, atol=1e-9) for k in first)
    capsys.readouterr()
    assert main(["train", config("d", f'init = "{tmp_path / "a" / "model.safetensors"}"', d_model=48),
                 "-o", str(tmp_path / "d"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from the config's" in err
    assert main(["train", config("e", f'init = "{tmp_path / "nothing.safetensors"}"'), "-o", str(tmp_path / "e"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such weights file" in err


def test_training_through_torch_compile_gives_the_same_run(tmp_path, data_dir, capsys):
    """`compile = BACKEND` runs the steps through torch.compile: the same losses and weights as the eager run (here the
    aot_eager backend, which traces forward and backward as inductor does, without its minutes of C++ compilation on
    a CPU; inductor itself is measured on the GPU by benchmarks/training.py --compile). A backend that does not exist
    is one clear error."""
    import json

    from eventllm.cli import main

    def config(name, extra=""):
        return tiny_train_config(tmp_path, data_dir, name, steps=2, warmup=1, extra="dropout = 0.0\n" + extra)

    assert main(["train", config("eager"), "-o", str(tmp_path / "eager"), "-q"]) == 0
    assert main(["train", config("compiled", 'compile = "aot_eager"'), "-o", str(tmp_path / "compiled"), "-q"]) == 0
    logs = [json.loads((tmp_path / n / "train_log.json").read_text())["history"] for n in ("eager", "compiled")]
    assert [h["valid_loss"] for h in logs[0]] == pytest.approx([h["valid_loss"] for h in logs[1]], rel=1e-5)
    a, b = (load_model(str(tmp_path / n / "model.safetensors")).model.state_dict() for n in ("eager", "compiled"))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    capsys.readouterr()
    assert main(["train", config("bad", 'compile = "no-such-backend"'), "-o", str(tmp_path / "bad"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "compile = 'no-such-backend'" in err and "torch.compile backend" in err


def test_ship_sparse_makes_a_zoo_folder_that_runs_as_the_model_did(tmp_path):
    """examples/zoo/ship_sparse.py: int8 weights + scales, the thresholds with their precision, the tokenizer; loaded
    with its own thresholds it gives the logits of the fake-quantised model it was made from."""
    import importlib.util
    from pathlib import Path

    from safetensors import safe_open

    from eventllm import pipeline
    from eventllm.models.registry import ZOO_DIR

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("ship_sparse", root / "examples/zoo/ship_sparse.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    src = ZOO_DIR / "rwkv4-tiny"
    ship.ship(src / "model.safetensors", src / "thresholds.json", tmp_path, "zoo:rwkv4-tiny", 8, 8, ZOO_DIR / "tokenizer.json")
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert sum(f.get_slice(k).get_dtype() == "I8" for k in f.keys()) == 6 * 7 + 2  # every projection, the head, the embedding table
    shipped = pipeline.load(str(tmp_path / "model.safetensors"), tmp_path / "thresholds.json")
    made = pipeline.load("zoo:rwkv4-tiny", "shipped", precision={"weight_bits": 8, "event_bits": 8, "method": "mse"})
    assert shipped.model.quantization["weight_bits"] == 8 and shipped.model.quantization["method"] == "mse"
    ids = torch.tensor([shipped.tokenizer.encode("It was a bright cold day in April, and the clocks")])
    with torch.no_grad():
        assert torch.allclose(shipped.model(ids)[0], made.model(ids)[0], atol=1e-4)
    assert (tmp_path / "tokenizer.json").read_bytes() == (ZOO_DIR / "tokenizer.json").read_bytes()
