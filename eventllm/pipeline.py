"""The pipeline, once, for every caller: model (+ thresholds) → process graph → event rates → mapping → costs →
simulation. The CLI, the demo, the simulator backend of generation sessions, the examples and the benchmarks
all go through these functions.

>>> loaded = load("zoo:rwkv4-small", thresholds="shipped")             # doctest: +SKIP
>>> hw = prepare(loaded.model, loaded.name, "seneca", rate_tokens=loaded.tokenizer.encode("It was late."))
>>> runs = simulate(hw, loaded.tokenizer.encode("The sea"), modes=("thresholded", "dense"))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from eventllm.errors import ConfigError, DataError


def shipped_thresholds(model_spec: str) -> Path | None:
    """The calibrated thresholds file a zoo model ships with (None for other models or a zoo model without one)."""
    from eventllm.models.registry import ZOO_DIR

    if model_spec.startswith("zoo:"):
        path = ZOO_DIR / model_spec[4:] / "thresholds.json"
        return path if path.exists() else None
    return None


def best_thresholds(model_spec: str) -> Path | None:
    """The zoo model's best shipped configuration (`thresholds_best.json`: θ with the precision and head site it was
    calibrated at), else its shipped thresholds; None for other models."""
    from eventllm.models.registry import ZOO_DIR

    if model_spec.startswith("zoo:") and (ZOO_DIR / model_spec[4:] / "thresholds_best.json").exists():
        return ZOO_DIR / model_spec[4:] / "thresholds_best.json"
    return shipped_thresholds(model_spec)


def thresholds_built_in(model_spec: str) -> bool:
    """Whether a zoo model's thresholds are part of it (a model fine-tuned with them: its card says so), so that it
    runs with them unless told otherwise."""
    from eventllm.models.registry import zoo_card

    return model_spec.startswith("zoo:") and bool((zoo_card(model_spec[4:]) or {}).get("thresholds_built_in"))


def load(model_spec: str, thresholds: str | Path | None | bool = None, device: str | None = None, allow_partial: bool = False,
         precision: dict | None = None):
    """The model with its tokenizer (`LoadedModel`), thresholds applied: a file, "shipped" (the zoo model's own
    calibrated file, θ = 0 when it has none), "best" (its best shipped configuration, `best_thresholds`), False / "none" (θ = 0, as `--thresholds none`) or None: the model's
    default (its shipped file for a zoo model whose thresholds are built in, zoo:rwkv4-small-sparse; else θ = 0).
    `loaded.thresholds` says which file was applied, `loaded.missing_sites` which sites a partial file left at θ = 0.

    `precision` (keys weight_bits, event_bits, method, projections; `eventllm.models.quantize`) fake-quantises
    the model first; without it, the precision a thresholds file was calibrated at (its meta) is used."""
    from eventllm.models.registry import load_model

    loaded = load_model(model_spec)
    if device:
        from eventllm.models.device import torch_device

        loaded.model.to(torch_device(device))
    if thresholds is None and thresholds_built_in(model_spec):
        thresholds = "shipped"
    path = {"shipped": shipped_thresholds, "best": best_thresholds}[thresholds](model_spec) if thresholds in ("shipped", "best") \
        else (None if thresholds == "none" else thresholds or None)
    from eventllm.models.quantize import apply_precision

    apply_precision(loaded.model, resolve_precision(precision, path))
    loaded.missing_sites = []
    if path is not None:
        from eventllm.sparsity.thresholds import apply_thresholds

        loaded.missing_sites = apply_thresholds(loaded.model, path, allow_partial=allow_partial)["missing"]
    loaded.thresholds = str(path) if path is not None else None
    return loaded


def resolve_precision(precision: dict | None, thresholds_path) -> dict | None:
    """The precision to run at: the one asked for, else the one the thresholds file was calibrated at; asking for
    another than the file's is an error (its θ were set for that precision)."""
    from eventllm.errors import ThresholdError

    file_p = None
    if thresholds_path is not None:
        from eventllm.sparsity.thresholds import read_thresholds

        file_p = read_thresholds(thresholds_path).get("meta", {}).get("precision")
    if precision is None or not any(v is not None for v in precision.values()):
        return file_p
    if file_p:
        asked = {k: v for k, v in precision.items() if v is not None}
        differs = [k for k, v in asked.items() if k in ("weight_bits", "event_bits") and file_p.get(k, 16) != v]
        if differs:
            k = differs[0]
            raise ThresholdError(f"{thresholds_path} was calibrated at {k.replace('_', ' ')} {file_p.get(k, 16)}, not {asked[k]}: "
                                 f"drop --{k.replace('_', '-')} or calibrate at {asked[k]}")
        return _quantised(file_p | asked)
    return _quantised(precision)


def _quantised(precision: dict) -> dict:
    """`precision`, refused when it names a quantisation method or projections but no bits below 16 to quantise to."""
    low = (precision.get("weight_bits") or 16) < 16 or (precision.get("event_bits") or 16) < 16
    given = [flag for key, flag in (("method", "`quant_method`"), ("projections", "`quantize`")) if precision.get(key)]
    if given and not low:
        raise ConfigError(f"{given[0]} says how to quantise, but nothing is quantised at 16 bits; add `weight_bits` 8 "
                          f"(or 4) or `event_bits` 8, or drop {given[0]}")
    return precision


def build(model, name: str | None, rate_tokens: list[int] | None = None, source: str | None = None,
          delta: float | None = None, delta_projections: list[str] | None = None):
    """The event-driven process graph of `model` with its current θ (and delta events of threshold θ_Δ = `delta`
    at the sites of `delta_projections`, all when None); with `rate_tokens`, the mean events per token measured
    on them go into `graph.meta["event_rates"]` (the mapper's expected traffic)."""
    from eventllm.process.build import build_graph
    from eventllm.process.executor import measure_event_rates

    graph = build_graph(model.eval(), name=name)
    if delta is not None:
        graph = graph.with_delta_events(delta, delta_projections)
    if rate_tokens:
        graph.meta["event_rates"] = measure_event_rates(graph, rate_tokens) | ({"source": source} if source else {})
    return graph


@dataclass
class Hardware:
    """A graph mapped onto a topology, with the cost table of its simulation."""

    graph: object
    mapping: object
    costs: object


def place(graph, topology: str = "seneca", costs: str | None = None, placement: str = "bisection", seed: int = 0,
          fill: float = 1.0) -> Hardware:
    """Map `graph` onto `topology` (preset, PRESET:ROWSxCOLS or TOML; at most `fill` of each core's memory) and
    load the cost table (default: the topology's own preset)."""
    from mapping import map_graph
    from sim.costs import load_costs

    mapping = map_graph(graph, topology, placement=placement, seed=seed, fill=fill)
    return Hardware(graph, mapping, load_costs(costs or mapping.topology.name))


def prepare(model, name: str | None, topology: str = "seneca", costs: str | None = None,
            rate_tokens: list[int] | None = None) -> Hardware:
    """`build` then `place`: the model as an event-driven graph on neuromorphic cores, ready to simulate."""
    return place(build(model, name, rate_tokens), topology, costs)


def simulate(hw: Hardware, tokens: list[int], modes=("thresholded",), progress: bool = False) -> dict[str, dict]:
    """The message engine over `tokens` in each mode ("thresholded", "natural": θ = 0 event-driven, "dense":
    θ = 0 with every entry processed), one summary per mode (`sim.report.summarize`)."""
    from sim.report import simulate as run

    if not tokens:
        raise ConfigError("nothing to simulate: pass at least one token")
    return run(hw.graph, hw.mapping, hw.costs, list(tokens), tuple(modes), progress=progress)


def trace(hw: Hardware, model, ids: list[int], modes=("thresholded",), segments: int = 1, progress: bool = False) -> dict[str, dict]:
    """The trace engine over `ids` (the same counters as `simulate`, from the event masks of `model`, the torch model
    `hw.graph` was built from, many tokens at once), one summary per mode."""
    if not ids:
        raise ConfigError("nothing to simulate: pass at least one token")
    return simulate_segments(hw.graph, hw.mapping, hw.costs, list(ids), tuple(modes), segments, None, "trace", model,
                             progress=progress)


def graph_model(graph, spec: str, device: str | None = None):
    """The torch model `graph` was built from (`spec`), as the graph holds it: its head site, its precision and its
    per-neuron θ vectors bit for bit; the trace engine's event masks come from it."""
    from eventllm.masks import check_model_matches, site_key
    from eventllm.models.quantize import apply_precision
    from eventllm.models.registry import load_model

    model = load_model(spec).model
    if any(q.kind == "threshold" and q.attrs.get("projection") == "head" for q in graph):
        model.set_head_threshold(True)
    apply_precision(model, graph.meta.get("precision"))  # the masks of the low-bit model the graph holds
    check_model_matches(model, graph)  # before its sites are looked up
    per_neuron = [q for q in graph if q.kind == "threshold" and "score_theta" in q.attrs]
    if per_neuron:  # whatever scores made them (simulate_segments checks the vectors are the graph's)
        model.set_theta_vectors({site_key(graph, q): q.vars["theta"].value for q in per_neuron},
                                {site_key(graph, q): q.attrs["score_theta"] for q in per_neuron})
    if device:
        from eventllm.models.device import torch_device

        model.to(torch_device(device))
    return model


# --- the door for the rooms above: mapping/ and sim/ as the command line and the backends use them -----------
def plots(runs: dict[str, dict], mapping, folder: str | Path, title: str) -> list[Path]:
    """The simulation report's plots of `runs` on `mapping` (energy breakdown, layer latency, core activity) in `folder`."""
    from sim.report import plots as draw

    return draw(runs, mapping, folder, title)


def map_graph(graph, topology, placement: str = "bisection", seed: int = 0, fill: float = 1.0):
    """`mapping.map_graph`: shards, cores and routes of `graph` on `topology` (a name, PRESET:ROWSxCOLS, a TOML file or a
    `Topology`)."""
    from mapping import map_graph as run

    return run(graph, topology, placement=placement, seed=seed, fill=fill)


def load_mapping(path: str | Path, graph):
    """A mapping file written by `eventllm map`, checked against `graph`."""
    from mapping import Mapping

    return Mapping.load(path, graph)


def load_costs(name: str):
    """A cost table: a preset name or a TOML file."""
    from sim.costs import load_costs as read

    return read(name)


def topology_note(costs, topology: str) -> str | None:
    """A line saying that `costs` were made for another topology than `topology` (None when they match)."""
    from sim.costs import topology_note as note

    return note(costs, topology)


def settings(graph) -> dict:
    """What a simulated configuration is made of: weight and event bits, the head threshold, delta events."""
    from sim.report import settings as of

    return of(graph)


def results_json(runs: dict[str, dict], info: dict) -> dict:
    """The JSON of a simulation: the thresholded run at top level, the others as blocks, with ratios."""
    from sim.report import results_json as to_json

    return to_json(runs, info)


def simulator(hw: Hardware, dense: bool = False):
    """A message-engine simulator of `hw` that owns its run state, token by token: event-driven, or `dense`, the
    baseline every figure is compared with: the 16-bit model (a low-bit graph's plain counterpart, mapped anew), θ = 0
    and every entry processed, whatever its value."""
    from sim.engine import Simulator
    from sim.report import MODE_OVERRIDES, run_setup

    if not dense:
        return Simulator(hw.graph, hw.mapping, hw.costs, event_driven=True)
    graph, mapping = run_setup(hw.graph, hw.mapping, "dense")
    return Simulator(graph, mapping, hw.costs, event_driven=False, overrides=MODE_OVERRIDES)


def require_sanafe() -> None:
    """Raise `sim.sanafe.SanafeMissing` (one line naming `make setup`) unless the sanafe package imports."""
    from sim.sanafe import require_sanafe as check

    check()


def sanafe_compare(hw: Hardware, model, ids: list[int], names: list[str] | None = None, layer: int | None = None,
                   timings=("simple", "detailed"), folder: str | Path | None = None, progress: bool = False) -> dict:
    """The projections of `hw.graph` (those `names`d, those of `layer`, or all) run on SANA-FE over `ids`, their sources
    driven by the event masks of `model` (the torch model the graph was built from), beside our trace engine's figures
    for the same tokens (`sim.sanafe.Comparison.run`); the whole graph's energy per token under our accounting and with
    the projections' input side as SANA-FE counts it at its loihi.yaml costs (`model`)."""
    from eventllm.masks import check_model_matches, check_thresholds_match, event_masks, graph_thetas
    from sim.report import summarize
    from sim.sanafe import Comparison
    from sim.trace import TraceEngine

    if not ids:
        raise ConfigError("nothing to simulate: pass at least one token")
    engine = TraceEngine(hw.graph, hw.mapping, hw.costs)
    cmp = Comparison(engine, names, layer)  # a missing sanafe package is named here, before any work
    check_model_matches(model, hw.graph)
    saved = model.get_thetas()
    try:
        model.set_thetas(graph_thetas(hw.graph))
        check_thresholds_match(model, hw.graph)
        for part, masks in event_masks(model, hw.graph, ids):
            cmp.add(part, masks)
    finally:
        model.set_thetas(saved)
    out = cmp.run(timings, folder=folder, progress=progress)
    total = summarize(engine)["energy_per_token_j"]
    T = out["tokens"]
    ours = sum(r["ours"]["energy_j"] for r in out["projections"]) / T
    theirs = sum(r["sanafe_loihi_yaml"]["energy_j"] for r in out["projections"]) / T
    out["model"] = {"energy_per_token_j": total, "projections_energy_per_token_j": ours,
                    "with_sanafe_loihi_yaml_projections_energy_per_token_j": total - ours + theirs}
    return out


@dataclass
class World:
    """This process's rank among `size` processes (rank 0 of 1 without torchrun; `eventllm.distributed` joins one)."""

    rank: int = 0
    size: int = 1

    def mine(self, segments: int) -> range:
        """The contiguous block of segment indices this rank runs."""
        return range(segments * self.rank // self.size, segments * (self.rank + 1) // self.size)

    def gather(self, obj) -> list:
        """`obj` of every rank, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def segment_bounds(n: int, segments: int) -> list[tuple[int, int]]:
    """`segments` contiguous [start, end) ranges covering n tokens, as equal as can be."""
    if segments < 1:
        raise ConfigError(f"`segments` must be at least 1, got {segments}")
    if n < 2 * segments:
        raise DataError(f"{n} tokens cannot be cut into {segments} segments of at least 2 tokens; pass fewer `segments`")
    edges = [n * i // segments for i in range(segments + 1)]
    return list(zip(edges[:-1], edges[1:]))


def simulate_segments(graph, mapping, costs, ids: list[int], modes, segments: int = 1, world=None, engine: str = "trace",
                      model=None, chunk: int = 256, progress: bool = False) -> dict[str, dict]:
    """`sim.report.simulate` over a long text: each segment from a fresh state, on the trace engine (event
    masks from `model`, the torch model the graph was built from) or the message engine; summaries per mode."""
    from sim.engine import Simulator
    from sim.report import MODE_OVERRIDES, run_setup, summarize
    from sim.trace import TraceEngine, merge_results

    world = world or World()  # under torchrun the ranks share the segments
    bounds = segment_bounds(len(ids), segments)
    limit = min((p.attrs["max_positions"] for p in graph if p.kind == "attention"), default=None)
    if limit is not None and max(b - a for a, b in bounds) > limit:
        need = math.ceil(len(ids) / limit)
        raise ConfigError(f"the model sees at most {limit} positions and a segment has {max(b - a for a, b in bounds)} tokens; "
                          f"pass `segments` {need} or more")
    if engine == "trace":
        from eventllm.masks import check_model_matches, check_thresholds_match, graph_thetas, run_trace

        if model is None:
            raise ConfigError("the trace engine needs the torch model the graph was built from")
        check_model_matches(model, graph)
        saved = model.get_thetas()
    elif engine != "message":
        raise ConfigError(f"unknown engine {engine!r}; use trace or message")
    runs = {}
    try:
        for mode in modes:
            # one graph for every mode: θ = 0 of the natural and dense runs is a run option
            cls = TraceEngine if engine == "trace" else Simulator
            g, m = run_setup(graph, mapping, mode)  # a low-bit graph's dense baseline: the 16-bit model
            sim = cls(g, m, costs, event_driven=(mode != "dense"),
                      overrides=None if mode == "thresholded" else MODE_OVERRIDES)
            if engine == "trace":
                model.set_thetas(graph_thetas(graph) if mode == "thresholded" else 0.0)
                if mode == "thresholded":
                    check_thresholds_match(model, graph)
            results = []
            for i in world.mine(segments):
                a, b = bounds[i]
                sim.reset()
                desc = f"{engine} ({mode}) {i + 1}/{segments}"
                if engine == "trace":
                    run_trace(sim, model, ids[a:b], chunk, progress, desc)
                else:
                    from tqdm import tqdm

                    for t in tqdm(ids[a:b], desc=desc, unit="tok", disable=not progress, leave=False):
                        sim.step(int(t))
                    sim.result.logits = []
                results.append(sim.result)
            sim.result = merge_results([r for part in world.gather(results) for r in part])
            runs[mode] = summarize(sim)
    finally:
        if engine == "trace":
            model.set_thetas(saved)
    return runs
