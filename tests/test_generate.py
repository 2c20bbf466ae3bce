"""Generation sessions (interactive, piped, one-shot), the simulator backend against torch, the demo, examples."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from eventllm.generate.backends import SimBackend, TorchBackend
from eventllm.generate.sampling import Sampling
from eventllm.generate.session import Session
from eventllm.models.registry import ZOO_DIR, load_model
from eventllm.sparsity.thresholds import apply_thresholds

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "eventllm"]


def spawn(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return pexpect.spawn(sys.executable, ["-m", "eventllm", "generate", *args], cwd=str(ROOT), env=env,
                         encoding="utf-8", timeout=120)


def test_interactive_session_streams_tokens_and_ends_on_eof():
    child = spawn("--max-tokens", "8")  # simulator backend: live energy figures
    child.expect_exact("you> ")
    child.sendline("It was a dark night")
    child.expect_exact("model> ")
    child.expect(r"µJ")  # the live status line of a streamed token
    child.expect_exact("you> ")
    child.sendline("The old man")
    child.expect_exact("you> ")
    child.sendeof()
    child.expect("tokens generated")
    child.expect("energy per token")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_ends_the_session_cleanly_with_the_summary():
    child = spawn("--backend", "torch", "--max-tokens", "6")
    child.expect_exact("you> ")
    child.sendline("The captain said")
    child.expect_exact("you> ")
    child.sendintr()
    child.expect_exact("(interrupted)")
    child.expect("tokens generated")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_prompts_piped_on_stdin_are_turns(tmp_path):
    r = subprocess.run([*CLI, "generate", "--model", "zoo:rwkv4-tiny", "--backend", "torch", "--max-tokens", "5", "--json", str(tmp_path / "s.json")],
                       input="It was a dark night\nThe old man\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["turns"] == 2 and [t["prompt"] for t in s["turns_text"]] == ["It was a dark night", "The old man"]
    assert 0 < s["generated_tokens"] <= 10


def test_greedy_tokens_on_the_simulator_equal_torch():
    loaded = load_model("zoo:rwkv4-tiny")
    apply_thresholds(loaded.model, ZOO_DIR / "rwkv4-tiny" / "thresholds.json")
    replies = {}
    for backend in (TorchBackend(loaded.model), SimBackend(loaded.model, "seneca")):
        s = Session(backend, loaded.tokenizer, Sampling.greedy(), max_tokens=24)
        "".join(s.reply("The captain looked at the sea and said"))
        "".join(s.reply(" Then he turned to the boy"))
        replies[backend.name] = [t.reply_ids for t in s.turns]
        if backend.name == "sim":
            summary = s.summary()
            assert summary["energy_ratio"] > 1 and summary["latency_ratio"] > 1
    assert replies["sim"] == replies["torch"]
    assert sum(len(r) for r in replies["sim"]) == 48


def test_one_shot_generation_with_sampling_is_reproducible():
    runs = [subprocess.run([*CLI, "generate", "--model", "zoo:rwkv4-tiny", "--backend", "torch", "--prompt", "The sea", "--max-tokens", "10",
                            "--temperature", "0.9", "--top-p", "0.9", "--seed", "3"], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs)
    texts = [r.stdout.split("\nsession")[0] for r in runs]  # the generated text, before the summary table
    assert texts[0] == texts[1] and texts[0].startswith("The sea") and len(texts[0]) > len("The sea")


def test_demo_shows_four_configurations_on_the_same_tokens_and_writes_its_report(tmp_path, capsys):
    from eventllm.cli import main

    # the shipped held-out text (no --data): tiny as the "sparse" model (θ = 0) beside itself with its shipped θ
    assert main(["demo", "--model", "zoo:rwkv4-tiny", "--thresholds", "none", "--baseline", "zoo:rwkv4-tiny", "--tokens", "256",
                 "--max-tokens", "6", "-o", str(tmp_path / "demo"), "-q"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "demo" / "demo.json").read_text())
    rows = {r["config"]: r for r in report["rows"]}
    assert list(rows) == ["dense 16-bit", "natural (zeros skipped)", "paper's method (training-free θ)", "eventllm: θ = 0"]
    for name in rows:
        assert name in out
    assert report["tokens"] == 256 and report["data"].endswith("heldout/pg-books")
    dense, natural, paper, sparse = rows.values()
    assert dense["energy_ratio"] == 1.0 and dense["sparsity_mac_weighted"] == 0.0
    assert paper["energy_ratio"] > natural["energy_ratio"] > 1.0 and paper["sparsity_mac_weighted"] > natural["sparsity_mac_weighted"]
    # the "sparse" model here is the same model at θ = 0: its row is the natural one, measured anew (its own graph is
    # placed by its own event rates, so only the network's share of the energy may differ a little)
    assert sparse["ppl"] == pytest.approx(natural["ppl"], rel=1e-6) and sparse["energy_per_token_j"] == pytest.approx(
        natural["energy_per_token_j"], rel=1e-2)
    assert report["generation"]["generated_tokens"] == 6
    for f in ("table.txt", "mapping.json", "mapping.png", "energy_breakdown.png", "layer_latency.png", "core_activity.png",
              "graph/graph.json"):
        assert (tmp_path / "demo" / f).exists()


def test_piped_prompts_get_max_tokens_each_and_stop_only_where_told(monkeypatch, capsys, tmp_path):
    import io

    from eventllm.cli import main

    def run(*extra):
        monkeypatch.setattr(sys, "stdin", io.StringIO("The sea\n"))
        assert main(["generate", "--model", "zoo:rwkv4-tiny", "--backend", "torch", "--greedy", "--max-tokens", "40",
                     "--json", str(tmp_path / "g.json"), "-q", *extra]) == 0
        capsys.readouterr()
        return json.loads((tmp_path / "g.json").read_text())

    full = run()
    assert full["generated_tokens"] == 40  # no blank-line stop for piped prompts
    reply = full["turns_text"][0]["reply"]
    stop = reply.strip()[5:9]  # a piece of text the greedy reply is known to contain
    cut = run("--stop", stop)
    assert cut["generated_tokens"] < 40 and stop in cut["turns_text"][0]["reply"]
    assert reply.startswith(cut["turns_text"][0]["reply"])


def test_example_custom_topology(tmp_path):
    results = runpy.run_path(str(ROOT / "examples" / "map_custom_topology.py"))["main"](str(tmp_path))
    assert results["torus-512k"]["cores_used"] < results["seneca"]["cores_used"]  # twice the memory per core
    assert (tmp_path / "torus-512k.png").exists()


def test_example_compare_presets():
    results = runpy.run_path(str(ROOT / "examples" / "compare_presets.py"))["main"]("The sea")
    assert set(results) == {"seneca", "loihi2"} and all(r["energy_ratio"] > 1 for r in results.values())


def test_example_chat_session():
    s = runpy.run_path(str(ROOT / "examples" / "chat_session.py"))["main"](4)
    assert s["turns"] == 3 and s["generated_tokens"] <= 12


def test_repeated_ngram_share_counts_ngrams_seen_before():
    from eventllm.generate.sampling import repeated_ngram_share

    assert repeated_ngram_share([1, 2, 3, 4, 5, 6]) == 0.0
    # 1 2 3 4 1 2 3 4: 5 four-grams, of which (1 2 3 4) occurs a second time
    assert repeated_ngram_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert repeated_ngram_share([7] * 10) == pytest.approx(6 / 7)
    assert repeated_ngram_share([1, 2]) == 0.0
