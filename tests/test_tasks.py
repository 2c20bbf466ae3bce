"""Zero-shot task scoring on hand-made files in each published format, checked against an independent sum of
token log-probabilities; malformed files get an error naming the line."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from eventllm.errors import DataError
from eventllm.evaluate.tasks import loglikelihood, run_task
from eventllm.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


@pytest.fixture
def byte_rwkv():
    from eventllm.models import RWKV, RWKVConfig

    return RWKV(RWKVConfig(vocab_size=256, d_model=32, n_layer=2)).randomize(seed=4).eval()


def reference_ll(model, context: str, continuation: str) -> float:
    """Σ log p(token) over the continuation's bytes, from one forward pass over the whole text."""
    ctx, cont = list(context.encode()), list(continuation.encode())
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    logp = F.log_softmax(logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))


def write(tmp_path, name, rows):
    f = tmp_path / f"{name}.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


FILES = {
    "piqa": [{"goal": "To open a jar", "sol1": "twist the lid.", "sol2": "paint the lid blue.", "label": 0},
             {"goal": "To dry a towel", "sol1": "put it in water.", "sol2": "hang it in the sun.", "label": 1}],
    "arc": [{"id": "a1", "question": {"stem": "What do plants need?", "choices": [{"text": "light", "label": "A"},
             {"text": "noise", "label": "B"}, {"text": "ice", "label": "C"}]}, "answerKey": "A"},
            {"id": "a2", "question": {"stem": "Which is a metal?", "choices": [{"text": "wood", "label": "1"},
             {"text": "iron", "label": "2"}]}, "answerKey": "2"}],
    "hellaswag": [{"activity_label": "Cooking", "ctx_a": "A man cracks an egg.", "ctx_b": "he", "label": 2,
                   "endings": ["sings loudly.", "flies away.", "pours it into a pan.", "reads a book."]},
                  {"activity_label": "Running", "ctx_a": "A woman ties her shoes [title] then", "ctx_b": "she", "label": 0,
                   "endings": ["starts to run.", "eats soup.", "sleeps.", "paints."]}],
    "winogrande": [{"sentence": "The cup fell off the table because _ was too close to the edge.", "option1": "the cup",
                    "option2": "the table", "answer": "1"},
                   {"sentence": "Sam gave Alex a gift because _ was kind.", "option1": "Sam", "option2": "Alex", "answer": "2"}],
}


@pytest.mark.parametrize("task", sorted(FILES))
def test_multiple_choice_scoring_matches_independent_log_likelihoods(tmp_path, byte_rwkv, task):
    from eventllm.evaluate.tasks import parse_items, read_jsonl

    path = write(tmp_path, task, FILES[task])
    items = parse_items(task, read_jsonl(path), path)
    assert len(items) == 2
    acc = acc_norm = 0
    for item in items:
        lls = [reference_ll(byte_rwkv, c.context, c.continuation) for c in item.choices]
        for c, ll in zip(item.choices, lls):
            assert loglikelihood(byte_rwkv, TOK, c.context, c.continuation)[0] == pytest.approx(ll, abs=1e-4)
        norm = [ll / len(c.continuation.encode()) for ll, c in zip(lls, item.choices)]
        acc += max(range(len(lls)), key=lls.__getitem__) == item.label
        acc_norm += max(range(len(norm)), key=norm.__getitem__) == item.label
    r = run_task(byte_rwkv, TOK, task, path)
    assert r["n"] == 2 and r["acc"] == acc / 2 and r["acc_norm"] == acc_norm / 2


def test_winogrande_scores_the_shared_rest_after_each_filled_in_option(tmp_path):
    from eventllm.evaluate.tasks import parse_items, read_jsonl

    path = write(tmp_path, "w", FILES["winogrande"][:1])
    item = parse_items("winogrande", read_jsonl(path), path)[0]
    assert [c.context for c in item.choices] == ["The cup fell off the table because the cup", "The cup fell off the table because the table"]
    assert {c.continuation for c in item.choices} == {" was too close to the edge."}


def test_lambada_accuracy_and_perplexity(tmp_path, byte_rwkv):
    rows = [{"text": "the cat sat on the mat"}, {"text": "one two three four"}]
    path = write(tmp_path, "lambada", rows)
    r = run_task(byte_rwkv, TOK, "lambada", path)
    lls = [reference_ll(byte_rwkv, *(lambda c, w: (c, " " + w))(*row["text"].rsplit(" ", 1))) for row in rows]
    assert r["n"] == 2 and r["ppl"] == pytest.approx(math.exp(-sum(lls) / 2), rel=1e-4)
    assert r["acc"] in (0.0, 0.5, 1.0)


def test_lambada_on_the_shared_test_set_with_limit(data_dir):
    from eventllm.models.registry import load_model

    loaded = load_model("zoo:rwkv4-tiny")
    r = run_task(loaded.model, loaded.tokenizer, "lambada", data_dir / "lambada" / "lambada_test.jsonl", limit=5)
    assert r["n"] == 5 and r["ppl"] > 1


@pytest.mark.parametrize("task,bad,message", [
    ("piqa", '{"goal": "x", "sol1": "a", "label": 0}', r"line 2: a piqa item needs .* missing sol2"),
    ("arc", '{"question": "not a dict", "answerKey": "A"}', "line 2: an ARC item's question needs"),
    ("hellaswag", "{not json", "line 2: not valid JSON"),
    ("winogrande", '{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}', "line 2: a WinoGrande sentence needs a blank"),
    ("piqa", '{"goal": "x", "sol1": "a", "sol2": "b", "label": 5}', "line 2: the label 5"),
    ("lambada", '{"words": "x"}', 'line 2: a LAMBADA item needs a "text"'),
])
def test_malformed_task_files_name_the_line(tmp_path, byte_rwkv, task, bad, message):
    good = json.dumps(FILES[task][0]) if task in FILES else json.dumps({"text": "a b c"})
    f = tmp_path / "bad.jsonl"
    f.write_text(good + "\n" + bad + "\n")
    with pytest.raises(DataError, match=message):
        run_task(byte_rwkv, TOK, task, f)
