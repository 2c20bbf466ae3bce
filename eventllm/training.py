"""Training the zoo models from scratch: byte-level BPE tokenizer, then next-token prediction.

    eventllm train examples/zoo/rwkv4-tiny.toml -o out/rwkv4-tiny      (GPU: bf16 autocast; CPU works too)

The config file (TOML) names the architecture and its fields, the corpus and split, the tokenizer and the
optimiser schedule (AdamW, linear warm-up, cosine decay). Every `eval_every` steps the validation loss is
measured and a checkpoint written (`--resume` continues from it); the weights with the lowest validation
loss are kept and written as `model.safetensors` (eventllm format) with the tokenizer beside them.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eventllm.atomic import atomic_path, write_text
from eventllm.data import cached_token_stream, iter_documents
from eventllm.config import read_toml
from eventllm.errors import ConfigError, DataError, OutputError
from eventllm.models import build_model
from eventllm.models.checkpoints import save_eventllm
from eventllm.models.device import torch_device
from eventllm.tokenizer import HFTokenizer


@dataclass
class TrainConfig:
    name: str
    arch: str
    model: dict
    corpus: str
    tokenizer: str  # path to tokenizer.json; trained on the corpus's train split when missing
    vocab_size: int = 8000
    seed: int = 1234
    context: int = 512
    batch_size: int = 32
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.1
    eval_every: int = 100
    eval_batches: int = 20
    dtype: str = "bf16"  # autocast dtype on GPU; CPU always trains in float32
    unwrap: float = 0.0  # share of the corpus's pieces whose hard-wrapped lines are joined (data.unwrap_lines); true = 1
    init: str = ""  # weights to start from (an eventllm .safetensors of the same shape): continued training
    # torch.compile the model for the training and validation steps: false, true (the inductor backend, fused GPU
    # kernels; benchmarks/training.py --compile measures it) or a torch.compile backend name
    compile: bool | str = False
    notes: dict = field(default_factory=dict)


def load_train_config(path: str | Path, base: Path | None = None) -> TrainConfig:
    """Read a training config; relative paths in it are taken from the config file's folder."""
    path = Path(path)
    raw = read_toml(path, "config file")
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    _check_values(raw, path)
    cfg = TrainConfig(**raw)
    root = base or path.parent
    cfg.corpus = str((root / cfg.corpus).resolve()) if not Path(cfg.corpus).is_absolute() else cfg.corpus
    cfg.tokenizer = str((root / cfg.tokenizer).resolve()) if not Path(cfg.tokenizer).is_absolute() else cfg.tokenizer
    if cfg.init:
        cfg.init = str((root / cfg.init).resolve()) if not Path(cfg.init).is_absolute() else cfg.init
        if not Path(cfg.init).is_file():
            raise ConfigError(f"{path}: init = {cfg.init!r}: no such weights file; give an eventllm .safetensors or drop the key")
    return cfg


# key: (type, lowest allowed, highest allowed, inclusive low); the ranges a training run can work with
_RANGES = {
    "vocab_size": (int, 258, 1 << 20, True), "seed": (int, 0, 2**63 - 1, True), "context": (int, 1, 1 << 20, True),
    "batch_size": (int, 1, 1 << 16, True), "steps": (int, 1, 1 << 40, True), "lr": (float, 0, 10, False),
    "min_lr": (float, 0, 10, True), "warmup": (int, 0, 1 << 40, True), "weight_decay": (float, 0, 10, True),
    "grad_clip": (float, 0, 1e6, False), "dropout": (float, 0, 1, True), "eval_every": (int, 1, 1 << 40, True),
    "eval_batches": (int, 1, 1 << 20, True),
}


def _check_values(raw: dict, path: Path) -> None:
    """Types, ranges and required keys of a training config, and the model's size against the free memory."""
    from eventllm.limits import check_memory
    from eventllm.models import ARCHS

    required = [k for k, f in TrainConfig.__dataclass_fields__.items() if f.default is f.default_factory is MISSING]
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key {missing[0]!r}; a training config needs {', '.join(required)} (see examples/zoo/*.toml)")
    for key in ("name", "arch", "corpus", "tokenizer", "dtype", "init"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{path}: {key} must be a string, got {raw[key]!r}")
    if "compile" in raw:
        import torch._dynamo

        v = raw["compile"]
        if not isinstance(v, (bool, str)) or (isinstance(v, str) and v not in torch._dynamo.list_backends(exclude_tags=())):
            raise ConfigError(f"{path}: compile = {v!r}: give true, false or a torch.compile backend "
                              f"({', '.join(torch._dynamo.list_backends())})")
    for key in ("model", "notes"):
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"{path}: {key} must be a table [{key}], got {raw[key]!r}")
    for key, (kind, lo, hi, closed) in _RANGES.items():
        if key not in raw:
            continue
        v = raw[key]
        ok_type = isinstance(v, int) if kind is int else isinstance(v, (int, float)) and math.isfinite(v)
        if isinstance(v, bool) or not ok_type or v > hi or v < lo or (v == lo and not closed):
            raise ConfigError(f"{path}: {key} = {v!r} must be {'an integer' if kind is int else 'a number'} in "
                              f"{'[' if closed else '('}{lo}, {hi}]")
    if "unwrap" in raw:
        v = raw["unwrap"]
        if not isinstance(v, (bool, int, float)) or not 0 <= float(v) <= 1:
            raise ConfigError(f"{path}: unwrap = {v!r} must be true, false or the share of the corpus to unwrap, in [0, 1]")
        raw["unwrap"] = float(v)
    if raw["arch"] not in ARCHS:
        raise ConfigError(f"{path}: arch = {raw['arch']!r} is not known; choose one of {', '.join(ARCHS)}")
    if raw.get("dtype", "bf16") not in ("bf16", "fp16", "fp32"):
        raise ConfigError(f"{path}: dtype = {raw['dtype']!r} must be bf16, fp16 or fp32")
    cfg_cls = ARCHS[raw["arch"]][1]
    known = {f.name for f in fields(cfg_cls)} - {"vocab_size"}
    unknown = sorted(set(raw["model"]) - known) if isinstance(raw["model"], dict) else []
    if unknown:
        raise ConfigError(f"{path}: [model] has an unknown key {unknown[0]!r}; a {raw['arch']} model takes "
                          f"{', '.join(sorted(known))} (vocab_size goes at the top level)")
    try:  # the model config checks its own fields and that its weights fit
        model_cfg = cfg_cls(**{**raw["model"], "vocab_size": raw.get("vocab_size", 8000)})
    except TypeError as e:
        raise ConfigError(f"{path}: [model] {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: [model] {e}") from None
    # weights, gradients and two AdamW moments in float32
    check_memory(16 * model_cfg.n_parameters(), f"{path}: training this {raw['arch']} model", "make [model] smaller")


def train_tokenizer(texts, vocab_size: int, path: str | Path, progress: bool = False) -> HFTokenizer:
    """Train a byte-level BPE (GPT-2 style) on `texts` (any iterable of strings) and save it as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return HFTokenizer(path)


def corpus_pieces(corpus: str | Path, split: str = "train"):
    """The pieces of text of a corpus split, streamed (for tokenizer training)."""
    for doc in iter_documents(corpus, split):
        yield from doc


def lr_at(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over the steps, or over the time budget when that runs out first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_fraction))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def _loss(model, x, y, autocast_dtype):
    with torch.autocast(device_type=x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits, _ = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def validation_loss(model, stream: torch.Tensor, cfg: TrainConfig, autocast_dtype) -> float:
    """Mean next-token loss over evenly spaced windows of the validation stream (each from a fresh state)."""
    model.eval()
    n = (len(stream) - 1) // cfg.context
    starts = np.linspace(0, (n - 1) * cfg.context, num=min(n, cfg.eval_batches * cfg.batch_size)).astype(int)
    total, count = 0.0, 0
    for i in range(0, len(starts), cfg.batch_size):
        s = starts[i:i + cfg.batch_size]
        x = torch.stack([stream[j:j + cfg.context] for j in s]).long()
        y = torch.stack([stream[j + 1:j + 1 + cfg.context] for j in s]).long()
        total += _loss(model, x, y, autocast_dtype).item() * len(s)
        count += len(s)
    model.train()
    return total / count


def _start_from(model, path: str) -> None:
    """Copy the weights of `path` into `model` (continued training); the shapes must agree."""
    from eventllm.models.checkpoints import load_checkpoint

    src = load_checkpoint(path)
    if src.arch != model.arch or src.config_dict() != model.config_dict():
        raise ConfigError(f"init = {path}: its model ({src.arch}, {src.config_dict()}) differs from the config's "
                          f"({model.arch}, {model.config_dict()}); make [model] and vocab_size match it")
    model.load_state_dict({k: v.float() for k, v in src.state_dict().items()})


def train(cfg: TrainConfig, out_dir: str | Path, device: str | None = None, resume: bool = False, progress: bool = True,
          max_seconds: float | None = None) -> dict:
    """Train `cfg` and write model.safetensors, tokenizer.json and train_log.json under `out_dir`.

    `max_seconds` is a time budget: the learning rate decays over it (or over the steps, whichever ends first)
    and training ends (after a validation) when it is spent; the log says so.
    """
    from tqdm import tqdm

    device = str(torch_device(device))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; give a folder name for the output")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out} ({e.strerror or e}); choose another output folder") from None
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    tok_path = Path(cfg.tokenizer)
    tok = HFTokenizer(tok_path) if tok_path.exists() else train_tokenizer(corpus_pieces(cfg.corpus), cfg.vocab_size, tok_path, progress)
    cache = out / "tokens"
    train_ids = torch.from_numpy(cached_token_stream(cfg.corpus, "train", tok, cache, progress, cfg.unwrap).astype(np.int32)).to(device)
    valid_ids = torch.from_numpy(cached_token_stream(cfg.corpus, "valid", tok, cache, progress, cfg.unwrap).astype(np.int32)).to(device)
    for split, ids in (("train", train_ids), ("valid", valid_ids)):
        if len(ids) < cfg.context + 2:  # a window is context + 1 tokens, drawn from at least two places
            raise DataError(f"{cfg.corpus}: the {split} split has {len(ids):,} tokens, too few for windows of context = "
                            f"{cfg.context} (it needs at least {cfg.context + 2}); give a larger corpus or a smaller context")

    model = build_model(cfg.arch, {**cfg.model, "vocab_size": tok.vocab_size})
    if cfg.init:
        _start_from(model, cfg.init)
    elif hasattr(model, "init_weights"):
        model.init_weights(cfg.seed)
    model.to(device).train()
    model.set_dropout(cfg.dropout)
    # the steps run through `fwd`; `model` (the same parameters) is what is saved and checkpointed
    fwd = (torch.compile(model, backend="inductor" if cfg.compile is True else cfg.compile) if cfg.compile else model)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "emb" not in n and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.dtype) if device.startswith("cuda") else None

    start, best, history = 0, (float("inf"), None, -1), []
    ckpt = out / "checkpoint.pt"
    if resume and not ckpt.exists():
        print(f"--resume: no checkpoint in {out} (a run that ended, or none started there): training from the start",
              file=sys.stderr)
    if resume and ckpt.exists():
        try:  # weights_only: a checkpoint file cannot run code when it is read
            state = torch.load(ckpt, map_location=device, weights_only=True)
        except Exception as e:
            raise ConfigError(f"{ckpt}: cannot resume from it ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
                              "delete it to start afresh") from None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        best = (state["best_loss"], state["best_weights"], state["best_step"])
        rng = np.random.default_rng([cfg.seed, start])

    n_params = model.n_parameters()
    tokens_per_step = cfg.batch_size * cfg.context
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not progress, desc=cfg.name)
    t0, tokens_done, stopped_early = time.perf_counter(), 0, None
    loss = torch.tensor(float("nan"))  # the last step's training loss (none before the first step)
    for step in bar:
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            stopped_early = step
            vl = validation_loss(fwd, valid_ids, cfg, autocast_dtype)
            history.append({"step": step, "train_loss": loss.item(), "valid_loss": vl, "lr": opt.param_groups[0]["lr"]})
            if vl < best[0]:
                best = (vl, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, step)
            bar.write(f"time limit of {max_seconds:.0f} s reached at step {step}: stopping")
            break
        frac = (time.perf_counter() - t0) / max_seconds if max_seconds else 0.0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, frac)
        idx = torch.from_numpy(rng.integers(0, len(train_ids) - cfg.context - 1, size=cfg.batch_size)).to(device)
        offs = idx[:, None] + torch.arange(cfg.context + 1, device=device)[None, :]
        chunk = train_ids[offs].long()
        loss = _loss(fwd, chunk[:, :-1], chunk[:, 1:], autocast_dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tokens_done += tokens_per_step
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens_done / (time.perf_counter() - t0):,.0f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            vl = validation_loss(fwd, valid_ids, cfg, autocast_dtype)
            history.append({"step": step + 1, "train_loss": loss.item(), "valid_loss": vl, "lr": opt.param_groups[0]["lr"]})
            rate = tokens_done / (time.perf_counter() - t0)
            bar.write(f"step {step + 1}: train loss {loss.item():.3f}  valid loss {vl:.3f}  (ppl {math.exp(vl):.1f})  {rate:,.0f} tok/s")
            if vl < best[0]:
                best = (vl, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, step + 1)
            with atomic_path(ckpt) as tmp:  # a complete checkpoint or the previous one
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1, "history": history,
                            "best_loss": best[0], "best_weights": best[1], "best_step": best[2]}, tmp)
    elapsed = time.perf_counter() - t0
    model.load_state_dict(best[1])
    model.to("cpu").eval()
    model.set_dropout(0.0)
    log = {
        "name": cfg.name, "arch": cfg.arch, "config": model.config_dict(), "parameters": n_params,
        "train_tokens_in_split": int(len(train_ids)), "valid_tokens_in_split": int(len(valid_ids)),
        "tokens_seen": int(tokens_done), "epochs": tokens_done / len(train_ids), "stopped_early_at_step": stopped_early,
        "time_budget_s": max_seconds,
        "best_step": best[2], "best_valid_loss_windowed": best[0], "train_seconds": elapsed,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "train_config": asdict(cfg),
        "history": history,
    }
    save_eventllm(model, out / "model.safetensors", dtype=torch.bfloat16 if cfg.dtype == "bf16" else torch.float32)
    if tok_path.resolve() != (out / "tokenizer.json").resolve():
        with atomic_path(out / "tokenizer.json") as tmp:
            shutil.copy(tok_path, tmp)
    write_text(out / "train_log.json", json.dumps(log, indent=2))
    ckpt.unlink(missing_ok=True)
    return log
