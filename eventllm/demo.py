"""`eventllm demo`: what eventllm achieves, in one table, then the sparse model writing text on the simulator.

Four configurations on the same held-out tokens (by default the first 4,096 tokens of the pg-books test split that
ships inside the package), each simulated on SENECA-like cores by the trace engine:

    dense 16-bit     the baseline model (zoo:rwkv4-small), θ = 0, every activation sent and multiplied
    natural          the same, zeros skipped (only the squared ReLU's outputs are naturally zero)
    paper's method   the same model with its shipped training-free θ (the paper's search at a 1% bound)
    eventllm         the best configuration shipped for the model (`pipeline.best_thresholds`: θ with the head site
                     and the precision it was calibrated at), or a model and thresholds file given

with the MAC-weighted sparsity, the perplexity on those tokens, energy and latency per token, both as ratios to
dense, and the cores each needs. Then the sparse model continues a prompt on the simulator backend.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from eventllm.report import format_table, pct

DEFAULT_PROMPT = "The captain looked at the sea and said"
SPARSE_MODEL = "zoo:rwkv4-small"
BASELINE_MODEL = "zoo:rwkv4-small"
RATE_TOKENS = 512  # tokens the mapper's expected traffic is measured on


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run_demo(output: str | Path, model_spec: str = SPARSE_MODEL, baseline: str = BASELINE_MODEL, data: str | None = None,
             tokens: int = 4096, prompt: str = DEFAULT_PROMPT, max_tokens: int = 64, progress: bool = True,
             seed: int = 1, thresholds: str | Path = "best") -> dict:
    """Run the demo; its report files appear in `output` together at the end (an interrupted demo leaves the old ones).
    `thresholds`: the sparse row's file, or "best" (the model's best shipped configuration)."""
    from eventllm.atomic import atomic_folder

    with atomic_folder(output, merge=True) as out:
        report = _demo(out, model_spec, thresholds, baseline, data, tokens, prompt, max_tokens, progress, seed)
    print(f"\ndone in {report['seconds']:.0f} s; report in {output}/ (demo.json, table.txt, graph/, mapping.json, *.png)")
    return report


def describe_configuration(loaded) -> str:
    """The sparse row's name: what its thresholds file says it is made of."""
    from eventllm.models.quantize import describe
    from eventllm.sparsity.thresholds import read_thresholds

    meta = read_thresholds(loaded.thresholds).get("meta", {}) if loaded.thresholds else {}
    parts = ["fine-tuned θ" if "finetuned_from" in meta or meta.get("method") == "finetune" else
             "greedy θ" if meta.get("search") == "greedy" else "paper's θ" if loaded.thresholds else "θ = 0"]
    if loaded.model.head_threshold:
        parts.append("head site")
    p = describe(loaded.model)
    if p["weight_bits"] < 16 or p["event_bits"] < 16:
        parts.append(f"int{p['weight_bits']} weights" + (f" + int{p['event_bits']} events" if p["event_bits"] < 16 else ""))
    return "eventllm: " + ", ".join(parts)


def _config_rows(base_ev: dict, base_runs: dict, sparse_ev: dict, sparse_runs: dict, sparse_name: str) -> list[dict]:
    """The four rows of the table, as data (each run's figures per token; sparsity MAC-weighted and the site mean)."""
    b, s = base_ev["sparsity"], sparse_ev["sparsity"]
    rows = [("dense 16-bit", 0.0, 0.0, base_ev["ppl_dense"], base_runs["dense"]),
            ("natural (zeros skipped)", b["mac_weighted"]["natural"], b["site_mean"]["natural"], base_ev["ppl_dense"],
             base_runs["natural"]),
            ("paper's method (training-free θ)", b["mac_weighted"]["thresholded"], b["site_mean"]["thresholded"],
             base_ev["ppl"], base_runs["thresholded"]),
            (sparse_name, s["mac_weighted"]["thresholded"], s["site_mean"]["thresholded"], sparse_ev["ppl"],
             sparse_runs["thresholded"])]
    dense = base_runs["dense"]
    return [{"config": name, "sparsity_mac_weighted": mw, "sparsity_site_mean": sm, "ppl": ppl,
             "energy_per_token_j": r["energy_per_token_j"], "latency_per_token_s": r["latency_per_token_s"],
             "cores": r["cores_used"], "energy_ratio": dense["energy_per_token_j"] / r["energy_per_token_j"],
             "latency_ratio": dense["latency_per_token_s"] / r["latency_per_token_s"]} for name, mw, sm, ppl, r in rows]


def format_rows(rows: list[dict], ppl_reference: float) -> str:
    table = [[r["config"], pct(r["sparsity_mac_weighted"]), pct(r["sparsity_site_mean"]), f"{r['ppl']:.2f}", f"{100 * (r['ppl'] / ppl_reference - 1):+.2f}%",
              f"{r['energy_per_token_j'] * 1e6:.1f}", f"{r['latency_per_token_s'] * 1e6:.0f}", f"{r['energy_ratio']:.2f}x",
              f"{r['latency_ratio']:.2f}x", str(r["cores"])] for r in rows]
    return format_table(["configuration", "sparsity (MAC-w.)", "site mean", "perplexity", "vs dense", "µJ/token", "µs/token",
                         "energy ÷", "latency ÷", "cores"], table)


def _measure(spec: str, thresholds, ids: list[int], modes: tuple[str, ...], out: Path | None, progress: bool,
             tokenizer=None):
    """One model's perplexity and sparsity on `ids`, and its simulated energy and latency over them (trace engine);
    with `tokenizer` (the one that made `ids`), a model that reads text otherwise is refused before the work."""
    from eventllm import pipeline
    from eventllm.errors import ConfigError
    from eventllm.evaluate.language_model import evaluate_stream
    from eventllm.tokenizer import tokenizer_id

    loaded = pipeline.load(spec, thresholds)
    if tokenizer is not None and tokenizer_id(loaded.tokenizer) != tokenizer_id(tokenizer):
        raise ConfigError(f"{spec} reads text with another tokenizer than the baseline; compare a model with the one it "
                          "was fine-tuned from")
    model = loaded.model.eval()
    ev = evaluate_stream(model, ids, progress=progress, byte_lengths=loaded.tokenizer.token_bytes())
    hw = pipeline.prepare(model, loaded.name, "seneca", rate_tokens=ids[:RATE_TOKENS])
    runs = pipeline.trace(hw, model, ids, modes, progress=progress)
    if out is not None:
        hw.graph.save(out / "graph")
        hw.mapping.save(out / "mapping.json")
        hw.mapping.heatmap(out / "mapping.png")
    return loaded, ev, hw, runs


def _demo(out: Path, model_spec: str, thresholds, baseline: str, data: str | None, n_tokens: int, prompt: str,
          max_tokens: int, progress: bool, seed: int) -> dict:
    from eventllm.data import HELDOUT_TEXT, cached_token_stream
    from eventllm.errors import ConfigError
    from eventllm.generate.backends import SimBackend
    from eventllm.generate.sampling import Sampling
    from eventllm.generate.session import Session
    from eventllm.models.registry import load_model

    t0 = time.perf_counter()
    source = data or str(HELDOUT_TEXT)
    report: dict = {"model": model_spec, "baseline": baseline, "data": source, "split": "test", "steps": {}}

    t = _step(f"1. {baseline}: dense, natural and the paper's training-free θ")
    tok = load_model(baseline).tokenizer
    ids = cached_token_stream(source, "test", tok, progress=progress)[:n_tokens].astype("int64").tolist()
    if len(ids) < 2:
        raise ConfigError(f"{source} [test] gives {len(ids)} tokens; the demo needs at least 2 (pass `data` with more text)")
    base, base_ev, _, base_runs = _measure(baseline, "shipped", ids, ("thresholded", "natural", "dense"), None, progress)
    print(f"{len(ids):,} tokens of {source} [test]; thresholds {base.thresholds}")
    report["steps"]["baseline_s"] = time.perf_counter() - t

    t = _step(f"2. {model_spec}: eventllm's configuration (thresholds {thresholds})")
    sparse, sparse_ev, hw, sparse_runs = _measure(model_spec, thresholds, ids, ("thresholded",), out, progress, tok)
    from eventllm.models.quantize import describe

    precision = describe(sparse.model)
    print(f"thresholds {sparse.thresholds}; weights {precision['weight_bits']}-bit, events {precision['event_bits']}-bit")
    report["steps"]["sparse_s"] = time.perf_counter() - t

    rows = _config_rows(base_ev, base_runs, sparse_ev, sparse_runs, describe_configuration(sparse))
    table = format_rows(rows, base_ev["ppl_dense"])
    title = (f"{len(ids):,} held-out tokens (pg-books test), SENECA-like cores (trace engine); ratios and perplexity "
             "change against dense 16-bit")
    print(f"\n{title}\n{table}")
    (out / "table.txt").write_text(f"{title}\n{table}\n")
    report |= {"tokens": len(ids), "rows": rows, "precision": precision, "sparse_thresholds": sparse.thresholds,
               "baseline_thresholds": base.thresholds}
    from eventllm import pipeline

    written = pipeline.plots(sparse_runs, hw.mapping, out, sparse.name)

    sampling = Sampling(seed=seed)
    t = _step(f"3. {model_spec} writes on the simulator (nucleus sampling: temperature {sampling.temperature}, "
              f"top-p {sampling.top_p}, seed {seed})")
    session = Session(SimBackend(sparse.model, "seneca", model_name=sparse.name), sparse.tokenizer, sampling, max_tokens)
    print(prompt, end="", flush=True)
    for piece in session.reply(prompt):
        print(piece, end="", flush=True)
    print()
    summary = session.summary()
    print(f"{summary['generated_tokens']} tokens; {summary['energy_per_token_j'] * 1e6:.1f} µJ and "
          f"{summary['latency_per_token_s'] * 1e6:.0f} µs per token on SENECA; repeated 4-grams "
          f"{pct(summary['repeated_4gram_share'])}; wrote table.txt, graph/, mapping.json, " + ", ".join(p.name for p in written))
    report["generation"] = summary | {"prompt": prompt, "text": prompt + session.turns[-1].reply}
    report["steps"]["generate_s"] = time.perf_counter() - t
    report["seconds"] = time.perf_counter() - t0
    (out / "demo.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
