"""Zero-shot tasks scored as lm-evaluation-harness scores them.

LAMBADA (OpenAI's detokenised test set, `{"text": …}` per line): the context is the passage up to its last
word, the continuation is " " + the last word; `acc` counts passages whose continuation tokens are all the
model's greedy choices, `ppl` is exp(−mean log-likelihood of the continuation) over passages.

Multiple choice (PIQA, ARC, HellaSwag, WinoGrande in their published JSONL formats): every choice is scored by
the summed log-likelihood of its tokens after the context (`acc`) and by that sum divided by the choice's
length in bytes (`acc_norm`, as the harness normalises); the highest-scoring choice is the answer.
WinoGrande uses the harness's partial scoring: the context is the sentence up to the blank with each option
filled in, and the shared rest of the sentence is the continuation that is scored.
"""

from __future__ import annotations

import json
import lzma
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from eventllm.errors import DataError
from eventllm.models.base import CausalLM
from eventllm.tokenizer import Tokenizer

DEFAULT_FILES = {"lambada": "lambada/lambada_test.jsonl"}  # under a data folder laid out as ../shared/data


def default_task_file(name: str, task_data: str | Path | None) -> Path:
    """Where task `name`'s file lies: under `task_data` when given, else the copy shipped inside the package
    (eventllm/heldout, xz-compressed)."""
    from eventllm.data import HELDOUT_DIR

    if task_data is not None:
        return Path(task_data) / DEFAULT_FILES[name]
    return HELDOUT_DIR / (DEFAULT_FILES[name] + ".xz")
TASKS = ("lambada", "piqa", "arc", "hellaswag", "winogrande")


@dataclass
class Choice:
    context: str
    continuation: str


@dataclass
class Item:
    choices: list[Choice]
    label: int


def read_jsonl(path: str | Path, limit: int | None = None) -> list[tuple[int, dict]]:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"task file {path} is a folder; give the JSONL file in it")
    if not path.is_file():
        raise DataError(f"task file {path} not found; give NAME=PATH of an existing JSONL file (one item per line)")
    rows = []
    try:
        with (lzma.open(path, "rt", encoding="utf-8") if path.suffix == ".xz" else path.open(encoding="utf-8")) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}")
                rows.append((n, obj))
                if limit and len(rows) >= limit:
                    break
    except (UnicodeDecodeError, lzma.LZMAError):
        raise DataError(f"{path}: not UTF-8 text; a task file is JSON lines in UTF-8") from None
    except OSError as e:
        raise DataError(f"task file {path} cannot be read ({e.strerror or e})") from None
    if not rows:
        raise DataError(f"{path} has no items; a task file holds one JSON object per line (e.g. lambada_test.jsonl)")
    return rows


def _need(obj: dict, keys: tuple[str, ...], path, n: int, task: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataError(f"{path}, line {n}: a {task} item needs {', '.join(keys)}; missing {', '.join(missing)}")


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def parse_items(task: str, rows: list[tuple[int, dict]], path) -> list[Item]:
    """Turn a task's published JSONL rows into (context, continuation) choices with the right label."""
    items = []
    for n, o in rows:
        try:
            if task == "piqa":
                _need(o, ("goal", "sol1", "sol2", "label"), path, n, task)
                ctx = f"Question: {o['goal']}\nAnswer:"
                items.append(Item([Choice(ctx, " " + o["sol1"]), Choice(ctx, " " + o["sol2"])], int(o["label"])))
            elif task == "arc":
                _need(o, ("question", "answerKey"), path, n, task)
                q = o["question"]
                if not isinstance(q, dict) or "stem" not in q or "choices" not in q:
                    raise DataError(f"{path}, line {n}: an ARC item's question needs stem and choices")
                labels = [c["label"] for c in q["choices"]]
                ctx = f"Question: {q['stem']}\nAnswer:"
                items.append(Item([Choice(ctx, " " + c["text"]) for c in q["choices"]], labels.index(o["answerKey"])))
            elif task == "hellaswag":
                _need(o, ("ctx_a", "ctx_b", "endings", "label", "activity_label"), path, n, task)
                ctx = _hellaswag_clean(o["activity_label"] + ": " + o["ctx_a"] + " " + o["ctx_b"].capitalize())
                items.append(Item([Choice(ctx, " " + _hellaswag_clean(e)) for e in o["endings"]], int(o["label"])))
            elif task == "winogrande":
                _need(o, ("sentence", "option1", "option2", "answer"), path, n, task)
                s = o["sentence"]
                if "_" not in s:
                    raise DataError(f"{path}, line {n}: a WinoGrande sentence needs a blank '_'")
                i = s.index("_")
                rest = " " + s[i + 1 :].strip()
                items.append(Item([Choice(s[:i] + o["option1"], rest), Choice(s[:i] + o["option2"], rest)], int(o["answer"]) - 1))
            else:
                raise DataError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        except (KeyError, ValueError, TypeError) as e:
            raise DataError(f"{path}, line {n}: malformed {task} item ({type(e).__name__}: {e})") from None
        if not 0 <= items[-1].label < len(items[-1].choices):
            raise DataError(f"{path}, line {n}: the label {items[-1].label} is not one of the {len(items[-1].choices)} choices")
    return items


@torch.no_grad()
def loglikelihood(model: CausalLM, tokenizer: Tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """log P(continuation | context) and whether every continuation token is the greedy choice."""
    ctx = tokenizer.encode(context)
    cont = tokenizer.encode(context + continuation)[len(ctx):]  # the harness's split of the joint encoding
    if not cont:
        raise DataError(f"the continuation {continuation!r} gives no tokens")
    ids = (ctx + cont)
    limit = getattr(model.config, "max_positions", None)
    if limit and len(ids) > limit:  # keep the end, as the harness does
        ids = ids[-limit:]
    x = torch.tensor([ids[:-1]], dtype=torch.long, device=next(model.parameters()).device)
    logits, _ = model(x, model.init_state(1) if model.recurrent else None)
    logp = F.log_softmax(logits[0, -len(cont):].float(), dim=-1)
    target = torch.tensor(cont, device=logp.device)
    ll = float(logp.gather(1, target[:, None]).sum())
    greedy = bool((logp.argmax(-1) == target).all())
    return ll, greedy


def evaluate_lambada(model: CausalLM, tokenizer: Tokenizer, path, limit: int | None = None, progress: bool = False) -> dict:
    from tqdm import tqdm

    rows = read_jsonl(path, limit)
    lls, hits = [], 0
    for n, o in tqdm(rows, desc="lambada", disable=not progress, leave=False):
        if "text" not in o or not isinstance(o["text"], str) or " " not in o["text"].strip():
            raise DataError(f"{path}, line {n}: a LAMBADA item needs a \"text\" with at least two words")
        ctx, last = o["text"].rsplit(" ", 1)
        ll, greedy = loglikelihood(model, tokenizer, ctx, " " + last)
        lls.append(ll)
        hits += greedy
    return {"task": "lambada", "n": len(rows), "acc": hits / len(rows), "ppl": math.exp(-sum(lls) / len(lls))}


def evaluate_multiple_choice(model: CausalLM, tokenizer: Tokenizer, task: str, path, limit: int | None = None,
                             progress: bool = False) -> dict:
    from tqdm import tqdm

    items = parse_items(task, read_jsonl(path, limit), path)
    acc = acc_norm = 0
    for item in tqdm(items, desc=task, disable=not progress, leave=False):
        scores = [loglikelihood(model, tokenizer, c.context, c.continuation)[0] for c in item.choices]
        norm = [s / max(1, len(c.continuation.encode("utf-8"))) for s, c in zip(scores, item.choices)]
        acc += int(max(range(len(scores)), key=scores.__getitem__) == item.label)
        acc_norm += int(max(range(len(norm)), key=norm.__getitem__) == item.label)
    return {"task": task, "n": len(items), "acc": acc / len(items), "acc_norm": acc_norm / len(items)}


def run_task(model: CausalLM, tokenizer: Tokenizer, task: str, path, limit: int | None = None, progress: bool = False) -> dict:
    if task == "lambada":
        return evaluate_lambada(model, tokenizer, path, limit, progress)
    if task in TASKS:
        return evaluate_multiple_choice(model, tokenizer, task, path, limit, progress)
    raise DataError(f"unknown task {task!r}; known: ppl, {', '.join(TASKS)}")
