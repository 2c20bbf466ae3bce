"""`eventllm demo`: the whole method on the shipped default model, end to end, with a report folder.

    thresholds (shipped, or calibrated now) → perplexity and sparsity on held-out text → process graph →
    mapping onto the SENECA preset → simulation of a prompt (dense / natural / thresholded) → a generated
    continuation on the simulator backend.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from eventllm.report import format_table, pct

DEFAULT_PROMPT = "The captain looked at the sea and said"


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run_demo(model_spec: str, output: str | Path, data: str | None, calibrate: bool, prompt: str, eval_tokens: int | None,
             max_tokens: int, progress: bool = True, seed: int = 1) -> dict:
    """Run the demo; its report files appear in `output` together at the end (an interrupted demo leaves the old ones)."""
    from eventllm.atomic import atomic_folder

    with atomic_folder(output, merge=True) as out:
        report = _demo(model_spec, out, Path(output), data, calibrate, prompt, eval_tokens, max_tokens, progress, seed)
    print(f"\ndone in {report['seconds']:.0f} s; report in {output}/ (demo.json, simulation.json, graph/, mapping.json, *.png)")
    return report


def _demo(model_spec: str, out: Path, final: Path, data: str | None, calibrate: bool, prompt: str, eval_tokens: int | None,
          max_tokens: int, progress: bool, seed: int) -> dict:
    from eventllm import pipeline
    from eventllm.evaluate.language_model import evaluate_stream
    from eventllm.generate.backends import SimBackend
    from eventllm.generate.sampling import Sampling
    from eventllm.generate.session import Session
    from eventllm.models.registry import ZOO_DIR, load_model
    from eventllm.sparsity.thresholds import apply_thresholds, save_thresholds
    from mapping import map_graph
    from sim.report import plots, public, results_json

    report: dict = {"model": model_spec, "steps": {}}
    t0 = time.perf_counter()

    t = _step(f"1. model and thresholds ({model_spec})")
    loaded = load_model(model_spec)
    model = loaded.model.eval()
    shipped = pipeline.shipped_thresholds(model_spec)
    if calibrate or shipped is None:
        from eventllm.data import cached_token_stream
        from eventllm.errors import DataError
        from eventllm.sparsity.calibrate import calibrate as run_calibration

        if data is None:
            raise DataError("calibration needs text: pass --data (e.g. ../shared/data/pg-books)")
        ids = cached_token_stream(data, "valid", loaded.tokenizer, progress=progress).astype("int64").tolist()
        res = run_calibration(model, ids, max_ppl_increase=0.01, progress=progress)
        thresholds = out / "thresholds.json"
        save_thresholds(model, thresholds, loaded.name, meta=res.meta())
        print(f"calibrated in {res.seconds:.0f} s: sparsity {pct(res.natural_sparsity)} → {pct(res.sparsity)} on the calibration text")
    else:
        thresholds = shipped
        print(f"using the shipped calibrated thresholds {thresholds.relative_to(ZOO_DIR.parent.parent)} "
              "(made by `eventllm calibrate … --max-ppl-increase 0.01`; pass --calibrate to redo it)")
    apply_thresholds(model, thresholds)
    report["thresholds"] = str(final / thresholds.name if thresholds.parent == out else thresholds)
    report["steps"]["thresholds_s"] = time.perf_counter() - t

    t = _step("2. perplexity and activation sparsity on held-out text")
    if data:
        from eventllm.data import cached_token_stream

        ids = cached_token_stream(data, "test", loaded.tokenizer, progress=progress)[: eval_tokens or None].astype("int64").tolist()
        ev = evaluate_stream(model, ids, progress=progress, byte_lengths=loaded.tokenizer.token_bytes())
        sp = ev["sparsity"]
        print(f"{len(ids):,} tokens of {data} [test]: perplexity {ev['ppl_dense']:.2f} → {ev['ppl']:.2f} "
              f"({100 * ev['ppl_increase']:+.2f}%), bits per byte {ev['bits_per_byte_dense']:.3f} → {ev['bits_per_byte']:.3f}, "
              f"sparsity (MAC-weighted) {pct(sp['mac_weighted']['natural'])} → {pct(sp['mac_weighted']['thresholded'])} "
              f"({sp['mac_weighted']['ratio']:.2f}x natural; mean over sites {pct(sp['natural'])} → {pct(sp['thresholded'])})")
        report["evaluation"] = {k: ev[k] for k in ("tokens", "ppl", "ppl_dense", "ppl_increase", "bits_per_byte", "bits_per_byte_dense")} | {
            "sparsity_natural": sp["natural"], "sparsity_thresholded": sp["thresholded"],
            "sparsity_mac_weighted_natural": sp["mac_weighted"]["natural"], "sparsity_mac_weighted_thresholded": sp["mac_weighted"]["thresholded"]}
    else:
        print("skipped: no --data given (pass --data ../shared/data/pg-books to measure perplexity)")
    report["steps"]["evaluate_s"] = time.perf_counter() - t

    t = _step("3. event-driven process graph")
    graph = pipeline.build(model, loaded.name, rate_tokens=loaded.tokenizer.encode(prompt), source="the prompt")
    graph.save(out / "graph")
    dense = graph.dense_synops_per_token()
    measured = sum(graph.meta["event_rates"]["synops"].values())
    print(f"{len(graph)} processes, {len(graph.connections())} connections, {graph.n_parameters():,} parameters; "
          f"synaptic ops per token: dense {dense:,}, event-driven {measured:,.0f} ({dense / measured:.2f}x fewer); wrote {final / 'graph'}")
    report["graph"] = {"processes": len(graph), "parameters": graph.n_parameters(), "dense_synops": dense, "event_synops": measured}
    report["steps"]["build_s"] = time.perf_counter() - t

    t = _step("4. mapping onto SENECA-like cores")
    hw = pipeline.place(graph, "seneca")
    mapping = hw.mapping
    seq = map_graph(graph, mapping.topology, placement="sequential").hop_traffic()
    s = mapping.summary()
    mapping.save(out / "mapping.json")
    mapping.heatmap(out / "mapping.png")
    print(f"{mapping.topology.note}; {s['cores_used']} cores, {s['shards']} shards, {s['param_bytes'] / 2**20:.1f} MiB of "
          f"weights at {mapping.topology.core.word_bits} bits; events x hops {s['hop_traffic']:,.0f} per token"
          + (f" ({100 * (1 - s['hop_traffic'] / seq):.0f}% below sequential placement)" if seq > 0 else "")
          + "; wrote mapping.json, mapping.png")
    report["mapping"] = {k: s[k] for k in ("cores", "cores_used", "shards", "hop_traffic", "max_link_load")} | {"sequential_hop_traffic": seq}
    report["steps"]["map_s"] = time.perf_counter() - t

    t = _step(f"5. simulation of the prompt {prompt!r}")
    tokens = loaded.tokenizer.encode(prompt)
    runs = pipeline.simulate(hw, tokens, ("thresholded", "natural", "dense"), progress=progress)
    sim_json = results_json(runs, {"model": loaded.name, "topology": "seneca", "costs": "seneca", "prompt": prompt})
    (out / "simulation.json").write_text(json.dumps(sim_json, indent=1) + "\n")
    rows = [[m, pct(runs[m]["activation_sparsity"]), f"{runs[m]['energy_per_token_j'] * 1e6:.2f}",
             f"{runs[m]['latency_per_token_s'] * 1e6:.1f}", f"{runs[m]['synaptic_ops_per_token'] / 1e6:.2f}",
             f"{runs[m]['energy_per_token_j'] / runs['thresholded']['energy_per_token_j']:.2f}x"] for m in ("dense", "natural", "thresholded")]
    print(format_table(["run", "sparsity", "µJ/token", "µs/token", "Msynops/token", "energy ÷ thresholded"], rows))
    written = plots(runs, mapping, out, loaded.name)
    print("wrote simulation.json, " + ", ".join(p.name for p in written))
    report["simulation"] = {m: {k: v for k, v in public(runs[m]).items() if k in ("energy_per_token_j", "latency_per_token_s",
                                                                                  "activation_sparsity", "synaptic_ops_per_token")}
                            for m in runs}
    report["steps"]["simulate_s"] = time.perf_counter() - t

    sampling = Sampling(seed=seed)
    t = _step(f"6. text generation on the simulator (nucleus sampling: temperature {sampling.temperature}, top-p {sampling.top_p}, seed {seed})")
    backend = SimBackend(model, "seneca", model_name=loaded.name)
    session = Session(backend, loaded.tokenizer, sampling, max_tokens, stop_at_blank_line=False)
    print(prompt, end="", flush=True)
    for piece in session.reply(prompt):
        print(piece, end="", flush=True)
    print()
    summary = session.summary()
    print(f"{summary['generated_tokens']} tokens at {summary['tokens_per_s']:.0f} tokens/s (simulated); "
          f"{summary['energy_per_token_j'] * 1e6:.2f} µJ and {summary['latency_per_token_s'] * 1e6:.0f} µs per token on SENECA; "
          f"dense ÷ sparse: energy {summary['energy_ratio']:.2f}x, latency {summary['latency_ratio']:.2f}x; "
          f"repeated 4-grams {pct(summary['repeated_4gram_share'])}")
    report["generation"] = summary | {"text": prompt + session.turns[-1].reply}
    report["steps"]["generate_s"] = time.perf_counter() - t
    report["seconds"] = time.perf_counter() - t0
    (out / "demo.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
