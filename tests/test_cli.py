"""The `eventllm` command: help, JSON output, and one-line errors with a non-zero exit code."""

import json
import subprocess
import sys

import pytest

from eventllm.models.checkpoints import save_eventllm
from eventllm.tokenizer import ByteTokenizer


def eventllm(*args, check=False):
    """`eventllm ARGS` through its `main()` in this process, with what it prints captured (as a subprocess's would be)."""
    import contextlib
    import io

    from eventllm.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help, or a bad option
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    res = subprocess.CompletedProcess(["eventllm", *args], code, out.getvalue(), err.getvalue())
    if check and code:
        raise subprocess.CalledProcessError(code, res.args, res.stdout, res.stderr)
    return res


def test_the_command_runs_as_a_program():
    """The one subprocess here: `python -m eventllm` is the command the tests above reach through main()."""
    r = subprocess.run([sys.executable, "-m", "eventllm", "info"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "zoo:rwkv4-small" in r.stdout


@pytest.fixture
def byte_model(tmp_path):
    """A small random RWKV over bytes (256 tokens: the byte tokenizer needs no file)."""
    from eventllm.models import RWKV, RWKVConfig

    model = RWKV(RWKVConfig(vocab_size=256, d_model=32, n_layer=2, d_ffn=64)).randomize(seed=5)
    return save_eventllm(model, tmp_path / "model.safetensors")


@pytest.mark.parametrize("sub", [[], ["info"], ["evaluate"], ["calibrate"], ["train"]])
def test_help(sub):
    out = eventllm(*sub, "--help", check=True)
    assert "usage: eventllm" in out.stdout


def test_evaluate_writes_json(byte_model, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    out_json = tmp_path / "out" / "result.json"
    res = eventllm("evaluate", "--model", str(byte_model), "--data", str(text), "--json", str(out_json), "-q", check=True)
    assert "Projection-input sparsity" in res.stdout
    result = json.loads(out_json.read_text())
    assert result["tokens"] == len(ByteTokenizer().encode(text.read_text())) - 1
    assert result["ppl"] > 1
    assert set(result["sparsity"]) >= {"natural", "thresholded", "per_layer"}
    assert len(result["sparsity"]["per_layer"]) == 2


def test_evaluate_thresholds_none_is_the_dense_model(byte_model, tmp_path):
    """`--thresholds none` means θ = 0 in evaluate as in calibrate: the same figures as leaving it out."""
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    runs = {}
    for name, extra in (("omitted", []), ("none", ["--thresholds", "none"])):
        eventllm("evaluate", "--model", str(byte_model), "--data", str(text), *extra, "--json", str(tmp_path / f"{name}.json"),
                 "-q", check=True)
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert runs["none"]["ppl"] == runs["omitted"]["ppl"] == runs["none"]["ppl_dense"]
    assert runs["none"]["sparsity"]["thresholded"] == runs["none"]["sparsity"]["natural"]
    assert runs["none"]["thresholds"] is None


def test_evaluate_with_thresholds_reports_both(byte_model, tmp_path):
    from eventllm.models.checkpoints import load_checkpoint
    from eventllm.sparsity.thresholds import save_thresholds

    model = load_checkpoint(byte_model)
    model.set_thetas(0.3)
    thr = save_thresholds(model, tmp_path / "thr.json", str(byte_model))
    text = tmp_path / "text.txt"
    text.write_text("Some text to read, more than a few tokens long. " * 10)
    out_json = tmp_path / "r.json"
    eventllm("evaluate", "--model", str(byte_model), "--thresholds", str(thr), "--data", str(text), "--json", str(out_json), "-q", check=True)
    r = json.loads(out_json.read_text())
    assert r["sparsity"]["thresholded"] > r["sparsity"]["natural"]
    assert r["ppl"] != r["ppl_dense"]


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--model", "/nonexistent/model", "--data", "x"], "no such file or folder"),
    (["evaluate", "--model", "zoo:nope", "--data", "x"], "unknown zoo model 'zoo:nope'"),
    (["info", "--model", "zoo:rwkv4-tiny", "--thresholds", "/nonexistent.json"], "no such thresholds file"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    res = eventllm(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("eventllm ")


def test_missing_data_is_one_line(byte_model, tmp_path):
    res = eventllm("evaluate", "--model", str(byte_model), "--data", str(tmp_path / "none"))
    assert res.returncode == 2 and "no such file or folder of text" in res.stderr


def test_info_lists_zoo_models_with_their_headline_figures_rounded():
    import re

    res = eventllm("info", check=True)
    assert "zoo:rwkv4-tiny" in res.stdout and "zoo:opt-tiny" in res.stdout
    from eventllm.models.registry import zoo_card

    h = zoo_card("rwkv4-small")["headline"]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("zoo:rwkv4-small "))
    for figure in (f"{h['ppl']:.2f}", f"{100 * h['sparsity_mac_weighted']:.0f}%", f"{h['energy_ratio']:.1f}x",
                   f"{h['latency_ratio']:.1f}x"):
        assert figure in line
    assert not re.search(r"\d\.\d{5,}", res.stdout)  # no figure printed to more digits than a person reads


def test_calibrate_writes_thresholds_that_evaluate_accepts(byte_model, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("A short calibration text about ships, whales and the sea. " * 60)
    thr = tmp_path / "thr.json"
    res = eventllm("calibrate", "--model", str(byte_model), "--data", str(text), "--split", "all", "--target-sparsity", "0.5",
                   "--tokens", "256", "--context", "64", "-o", str(thr), "-q", check=True)
    assert "Thresholds θ" in res.stdout
    doc = json.loads(thr.read_text())
    assert doc["meta"]["sparsity_on_calibration"] >= 0.5
    out = tmp_path / "ev.json"
    eventllm("evaluate", "--model", str(byte_model), "--thresholds", str(thr), "--data", str(text), "--json", str(out), "-q", check=True)
    assert json.loads(out.read_text())["sparsity"]["thresholded"] > 0.3


def test_calibrate_conflicting_goals_exit_2(byte_model, tmp_path):
    res = eventllm("calibrate", "--model", str(byte_model), "--data", "x", "--target-sparsity", "0.5", "--max-ppl-increase", "0.01", "-o", "t.json")
    assert res.returncode == 2 and "give only one of" in res.stderr and "Traceback" not in res.stderr


def test_evaluate_reference_reports_the_increase_against_the_dense_reference_on_the_same_tokens(tmp_path, capsys):
    from eventllm.cli import main

    out = tmp_path / "e.json"
    assert main(["evaluate", "--model", "zoo:rwkv4-tiny", "--thresholds", "shipped", "--reference", "zoo:rwkv4-tiny",
                 "--max-tokens", "256", "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())
    # the reference here is the model itself at θ = 0: its perplexity is the dense pass's, token for token
    assert r["reference"] == "zoo:rwkv4-tiny" and r["ppl_reference"] == pytest.approx(r["ppl_dense"], rel=1e-9)
    assert r["ppl_increase_reference"] == pytest.approx(r["ppl_increase"], rel=1e-9) and r["ppl_increase"] != 0  # θ applied
    assert "against the reference zoo:rwkv4-tiny" in capsys.readouterr().out
    # a reference that reads the text with another tokenizer: one line, exit 2, nothing written
    out.unlink()
    assert main(["evaluate", "--model", "zoo:rwkv4-tiny", "--reference", "zoo:rwkv4-small", "--max-tokens", "256",
                 "--json", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another tokenizer" in err[0] and not out.exists()
