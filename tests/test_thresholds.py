"""The threshold function, θ = 0 exactness, and thresholds files."""

import json

import pytest
import torch

from eventllm.errors import ThresholdError
from eventllm.evaluate.sparsity_stats import SparsityMeter
from eventllm.models.threshold import ActivationThreshold
from eventllm.sparsity.thresholds import apply_thresholds, save_thresholds


def test_hand_made_vector_gives_expected_zero_count():
    x = torch.tensor([0.0, 0.05, -0.05, 0.1, -0.1, 0.2, -0.3, 1.0, -2.0, 0.1001])
    site = ActivationThreshold(0, "att.key", theta=0.1)
    y = site(x)
    # |x| <= 0.1 is zeroed: 0, ±0.05, ±0.1  -> 5 zeros; the other 5 pass unchanged
    assert int((y == 0).sum()) == 5
    assert torch.equal(y[5:], x[5:])


@pytest.mark.parametrize("fixture", ["small_rwkv", "small_opt"])
def test_theta_zero_reproduces_dense_logits_exactly(fixture, request, tokens):
    model = request.getfixturevalue(fixture)
    with torch.no_grad():
        dense, _ = model(tokens)
        model.set_thetas(0.5)
        sparse, _ = model(tokens)
        model.set_thetas(0.0)
        again, _ = model(tokens)
    assert torch.equal(dense, again)
    assert not torch.equal(dense, sparse)


@pytest.mark.parametrize("fixture", ["small_rwkv", "small_opt"])
def test_every_projection_has_one_threshold_per_layer(fixture, request):
    model = request.getfixturevalue(fixture)
    sites = model.threshold_sites()
    assert [(s.layer, s.projection) for s in sites] == [(i, p) for i in range(model.n_layer) for p in model.PROJECTIONS]


def test_thresholds_change_the_zero_count_as_set(small_rwkv, tokens):
    small_rwkv.set_thetas({(1, "att.key"): 10.0})  # far above every activation: all zero
    with SparsityMeter(small_rwkv) as meter, torch.no_grad():
        small_rwkv(tokens)
    frac = meter.zero_fraction()
    assert frac[(1, "att.key")] == 1.0
    assert frac[(0, "att.key")] == 0.0


def test_file_round_trip(small_rwkv, tmp_path):
    small_rwkv.set_thetas({(0, "att.key"): 0.25, (2, "ffn.value"): 0.5})
    path = save_thresholds(small_rwkv, tmp_path / "thr.json", "test-model", meta={"how": "by hand"})
    expected = small_rwkv.get_thetas()
    small_rwkv.set_thetas(0.0)
    doc = apply_thresholds(small_rwkv, path)
    assert small_rwkv.get_thetas() == expected
    assert doc["meta"] == {"how": "by hand"} and doc["model"]["name"] == "test-model"


def test_file_for_another_model_is_rejected(small_rwkv, tmp_path):
    from eventllm.models import RWKV, RWKVConfig

    path = save_thresholds(small_rwkv, tmp_path / "thr.json", "model-a")
    other = RWKV(small_rwkv.config).randomize(seed=99)
    with pytest.raises(ThresholdError, match="made for model 'model-a'"):
        apply_thresholds(other, path)
    bigger = RWKV(RWKVConfig(vocab_size=64, d_model=32, n_layer=4, d_ffn=96)).randomize(seed=1)
    with pytest.raises(ThresholdError, match="not this model"):
        apply_thresholds(bigger, path)


def test_opt_file_rejected_by_rwkv(small_rwkv, small_opt, tmp_path):
    path = save_thresholds(small_opt, tmp_path / "thr.json", "opt")
    with pytest.raises(ThresholdError, match="made for a 'opt' model"):
        apply_thresholds(small_rwkv, path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not an eventllm thresholds file"),
    ('{"format": "eventllm-thresholds", "version": 7}', "version 7"),
    ('{"format": "eventllm-thresholds", "version": 1, "model": {}, "projections": []}', "missing key 'thresholds'"),
    ('{"format": "eventllm-thresholds", "version": 1, "model": {}, "projections": [], "thresholds": [{"att.key": -1}]}', "finite number"),
    ('{"format": "eventllm-thresholds", "version": 1, "model": {}, "projections": [], "thresholds": [{"att.key": NaN}]}', "finite number"),
])
def test_malformed_files_give_clear_errors(small_rwkv, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ThresholdError, match=message):
        apply_thresholds(small_rwkv, path)


def test_unknown_projection_is_named(small_rwkv, tmp_path):
    path = save_thresholds(small_rwkv, tmp_path / "thr.json", "m")
    doc = json.loads(path.read_text())
    doc["thresholds"][0]["att.gate"] = 0.1
    path.write_text(json.dumps(doc))
    with pytest.raises(ThresholdError, match="unknown projection 'att.gate'"):
        apply_thresholds(small_rwkv, path)


def test_missing_site_needs_allow_partial(small_rwkv, tmp_path):
    small_rwkv.set_thetas(0.2)
    path = save_thresholds(small_rwkv, tmp_path / "thr.json", "m")
    doc = json.loads(path.read_text())
    del doc["thresholds"][1]["att.key"]
    doc["thresholds"].pop()  # the last layer too
    path.write_text(json.dumps(doc))
    with pytest.raises(ThresholdError, match="no θ for layer 1 att.key.*`allow_partial`"):
        apply_thresholds(small_rwkv, path)
    out = apply_thresholds(small_rwkv, path, allow_partial=True)
    assert (1, "att.key") in out["missing"] and all((2, p) in out["missing"] for p in small_rwkv.PROJECTIONS)
    thetas = small_rwkv.get_thetas()
    assert thetas[(1, "att.key")] == 0.0 and thetas[(0, "att.key")] == pytest.approx(0.2)


def test_extra_layer_is_an_error(small_rwkv, tmp_path):
    path = save_thresholds(small_rwkv, tmp_path / "thr.json", "m")
    doc = json.loads(path.read_text())
    doc["thresholds"].append(dict(doc["thresholds"][0]))
    path.write_text(json.dumps(doc))
    with pytest.raises(ThresholdError, match="4 layers, the model has 3"):
        apply_thresholds(small_rwkv, path)


def test_shipped_thresholds_are_complete():
    from eventllm.models.registry import ZOO_DIR, load_model

    for f in sorted(ZOO_DIR.glob("*/thresholds.json")):
        model = load_model(f"zoo:{f.parent.name}").model
        assert apply_thresholds(model, f)["missing"] == []


def _per_neuron(model, kind: str) -> None:
    """Per-neuron θ of `kind` on a model holding the shipped θ: wina's θ times each site's mean column norm (about
    the shipped sparsity); gradient scales measured on 4,096 tokens of a book (mean 1 per site: θ as shipped)."""
    if kind == "wina":
        model.set_scores("wina")
        model.set_thetas({k: v * float(model.site(*k).channel_scale.mean()) for k, v in model.get_thetas().items()})
        return
    from eventllm.models.registry import load_model
    from eventllm.sparsity.calibrate import calibration_batch
    from eventllm.sparsity.scores import gradient_scales
    from tests.conftest import DATA

    text = DATA / "gutenberg" / "moby_dick.txt"
    if not text.exists():
        pytest.skip(f"shared data not found at {text}")
    if "gradient" not in _SCALES:  # measured once per test session: the same model, θ and tokens every time
        ids = load_model("zoo:rwkv4-tiny").tokenizer.encode(text.read_text()[:60000])
        _SCALES["gradient"] = gradient_scales(model, calibration_batch(ids, 4096, 128, 0))
    model.set_scores("gradient", {k: v.clone() for k, v in _SCALES["gradient"].items()})


_SCALES: dict = {}


@pytest.mark.parametrize("kind", ["wina", "gradient"])
def test_per_neuron_thresholds_torch_executor_and_simulator_agree_over_64_tokens(kind, tmp_path):
    """Per-neuron θ_i = θ / g_i on zoo:rwkv4-tiny (g: WINA's ‖W[:, i]‖, or the calibrated gradient scales): the graph's
    Threshold holds the θ vector; the executor's and the simulator's logits equal torch's within 1e-4 over 64 tokens
    and every site's events are torch's exactly; the thresholds file carries the scores (and the measured scales)
    and rebuilds the very same vectors."""
    import numpy as np
    import torch

    from eventllm.models.registry import load_model
    from eventllm.pipeline import place
    from eventllm.process.build import build_graph
    from eventllm.process.executor import Executor
    from eventllm.sparsity.thresholds import apply_thresholds, read_thresholds, save_thresholds
    from sim.engine import Simulator
    from tests.test_process import SHIPPED_THRESHOLDS, torch_step_logits

    model = load_model("zoo:rwkv4-tiny").model.eval()
    apply_thresholds(model, SHIPPED_THRESHOLDS)
    _per_neuron(model, kind)
    site = model.site(0, "ffn.key")
    if kind == "wina":
        g = torch.linalg.vector_norm(model.blocks[0].ffn.key.weight.float(), dim=0)
        torch.testing.assert_close(site.channel_scale, g.detach(), rtol=1e-5, atol=0)  # ‖W[:, i]‖, summed in another order
    else:
        assert float(site.channel_scale.mean()) == pytest.approx(1.0, rel=1e-5)
        assert float(site.channel_scale.std()) > 0.05  # the inputs are told apart
    graph = build_graph(model)
    t = graph["L0.ffn.key.threshold"]
    assert t.vars["theta"].value.shape == (t.attrs["n"],)
    assert graph.plain()["L0.ffn.key.threshold"].vars["theta"].value.shape == ()  # the dense baseline reads no θ vector
    np.testing.assert_array_equal(t.vars["theta"].value, (torch.tensor(site.theta, dtype=torch.float32) / site.channel_scale).numpy())
    tokens = torch.randint(0, 8000, (64,), generator=torch.Generator().manual_seed(0)).tolist()
    ref, meter = torch_step_logits(model, tokens)
    ex = Executor(graph)
    assert np.abs(ex.run(tokens) - ref).max() <= 1e-4
    hw = place(graph, "seneca")
    sim = Simulator(graph, hw.mapping, hw.costs)
    assert np.abs(sim.run(tokens) - ref).max() <= 1e-4
    for (layer, proj), n in meter.elements.items():
        assert ex.counts.per_process[f"L{layer}.{proj}.threshold"]["events_out"] == n - meter.zeros[(layer, proj)]
    assert sim.port_events() == ex.counts.per_port
    # the file: scores recorded, vectors rebuilt bit for bit
    save_thresholds(model, tmp_path / "w.json", "zoo:rwkv4-tiny")
    doc = read_thresholds(tmp_path / "w.json")
    assert doc["scores"] == kind and ("channel_scales" in doc) == (kind == "gradient")
    again = load_model("zoo:rwkv4-tiny").model.eval()
    apply_thresholds(again, tmp_path / "w.json")
    rebuilt = build_graph(again)
    for q in graph:
        if q.kind == "threshold":
            np.testing.assert_array_equal(rebuilt[q.name].vars["theta"].value, q.vars["theta"].value)
    apply_thresholds(again, SHIPPED_THRESHOLDS)  # a file without scores: one θ per site again
    assert again.scores == "magnitude" and build_graph(again)["L0.ffn.key.threshold"].vars["theta"].value.shape == ()


@pytest.mark.parametrize("fixture", ["small_rwkv", "small_opt"])
def test_gradient_scales_are_the_loss_gradient_at_each_input(fixture, request):
    """gradient_scales = √mean((∂CE/∂x)²) / its site mean, against the gradient taken at a zero offset added to each
    site's input (a leaf tensor: autograd's own gradient, not an intermediate's); on OPT the fused q/k/v site's
    gradient is that of all three projections. The model is measured dense, at full-precision events, and every
    site's θ, per-neuron scales and event bits, the scores kind, the weights' requires_grad and the mode come back."""
    import torch
    import torch.nn.functional as F

    from eventllm.sparsity.scores import gradient_scales

    model = request.getfixturevalue(fixture)
    batch = torch.randint(0, model.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(1))
    model.set_scores("wina")
    model.set_thetas(0.05)
    sites = model.threshold_sites()
    for s in sites:
        s.event_bits = 8  # low-bit events round each site's output: measured as if they did not
    before = {(s.layer, s.projection): (s.theta, s.channel_scale.clone(), s.event_bits) for s in sites}
    next(model.parameters()).requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    got = gradient_scales(model, batch, micro_batch=2)
    assert model.scores == "wina" and not model.training and [p.requires_grad for p in model.parameters()] == flags
    for s in sites:
        theta, scale, bits = before[(s.layer, s.projection)]
        assert s.theta == theta and s.event_bits == bits and torch.equal(s.channel_scale, scale)
    model.set_scores("magnitude")
    model.set_thetas(0.0)
    for s in sites:
        s.event_bits = None
    offsets, seen = {}, {}
    for s in sites:
        def shifted(x, s=s):  # one offset per input tensor: OPT's q, k and v read the same x through one site
            key = (s.layer, s.projection)
            if seen.get(key) is not x:
                seen[key], offsets[key] = x, torch.zeros_like(x, requires_grad=True)
            return x + offsets[key]
        s.forward = s.apply = shifted  # instance attributes, dropped below
    try:
        logits, _ = model(batch[:, :-1])
        F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum").backward()
    finally:
        for s in sites:
            del s.forward, s.apply
    assert set(got) == set(offsets)
    for k, d in offsets.items():
        g = d.grad.reshape(-1, d.shape[-1]).double().square().mean(0).sqrt()
        torch.testing.assert_close(got[k], (g / g.mean()).float(), rtol=1e-4, atol=1e-7)


def test_a_partial_gradient_file_with_a_head_keeps_each_site_its_scales(small_rwkv, tmp_path):
    """--allow-partial on a gradient-scores file with a head site: the head's scales stay the head's (they are named,
    not placed by position), the missing layer runs at θ = 0."""
    import json

    import numpy as np
    import torch

    from eventllm.errors import ThresholdError
    from eventllm.sparsity.thresholds import apply_thresholds, read_thresholds, save_thresholds

    small_rwkv.set_head_threshold(True)
    small_rwkv.set_scores("wina")
    scales = {k: torch.rand(len(v), generator=torch.Generator().manual_seed(len(k[1]) + 7 * k[0])) + 0.5
              for k, v in small_rwkv.theta_vectors().items()}
    small_rwkv.set_scores("gradient", scales)
    small_rwkv.set_thetas(0.1)
    save_thresholds(small_rwkv, tmp_path / "g.json", "small")
    doc = json.loads((tmp_path / "g.json").read_text())
    del doc["thresholds"][-1], doc["channel_scales"][-2]  # the last layer goes; the head's object stays last
    (tmp_path / "p.json").write_text(json.dumps(doc))
    again = type(small_rwkv)(small_rwkv.config)
    again.load_state_dict(small_rwkv.state_dict())
    assert apply_thresholds(again, tmp_path / "p.json", allow_partial=True)["missing"]
    head = (small_rwkv.n_layer, "head")
    np.testing.assert_array_equal(again.channel_scales()[head].numpy(), scales[head].numpy())
    assert again.site(small_rwkv.n_layer - 1, "ffn.key").theta == 0.0
    del doc["channel_scales"][-1]
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(ThresholdError, match=r"\"channel_scales\" has 2 objects, \"thresholds\" 2 layers and a head \(so 3\)"):
        read_thresholds(tmp_path / "p.json")



def test_bad_scores_are_clear_errors(tmp_path, small_rwkv):
    import json

    from eventllm.errors import ConfigError, GraphError, ThresholdError
    from eventllm.process.library import Threshold
    from eventllm.sparsity.thresholds import apply_thresholds, read_thresholds, save_thresholds

    with pytest.raises(ConfigError, match="unknown scores 'l2'"):
        small_rwkv.set_scores("l2")
    save_thresholds(small_rwkv, tmp_path / "t.json", "small")
    doc = json.loads((tmp_path / "t.json").read_text())
    (tmp_path / "t.json").write_text(json.dumps(doc | {"scores": "l2"}))
    with pytest.raises(ThresholdError, match="scores must be one of magnitude, wina, gradient"):
        read_thresholds(tmp_path / "t.json")
    with pytest.raises(ConfigError, match="need their per-neuron scales"):
        small_rwkv.set_scores("gradient")
    with pytest.raises(ConfigError, match="take none"):
        small_rwkv.set_scores("wina", {})
    small_rwkv.set_scores("wina")
    ones = {k: [1.0] * len(v) for k, v in small_rwkv.theta_vectors().items()}
    small_rwkv.set_scores("gradient", ones)  # g = 1: the magnitude ranking
    with pytest.raises(ConfigError, match=r"per-neuron scales for 20 sites, the model has 21 \(none for layer 0 att.key\)"):
        small_rwkv.set_scores("gradient", dict(list(ones.items())[1:]))
    with pytest.raises(ConfigError, match="layer 0 att.key: per-neuron scales must be"):
        small_rwkv.set_scores("gradient", ones | {(0, "att.key"): [1.0, -1.0]})
    save_thresholds(small_rwkv, tmp_path / "g.json", "small")
    doc = json.loads((tmp_path / "g.json").read_text())
    for edit, message in [(lambda d: d.pop("channel_scales"), "go with \"scores\": \"gradient\""),
                          (lambda d: d.pop("scores"), "go with \"scores\": \"gradient\""),
                          (lambda d: d["channel_scales"][0].update({"att.key": [0.0]}), "channel_scales layer 0 att.key: must be"),
                          (lambda d: d.update(channel_scales={}), "one object per layer")]:
        bad = json.loads(json.dumps(doc))
        edit(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ThresholdError, match=message):
            read_thresholds(tmp_path / "bad.json")
    bad = json.loads(json.dumps(doc))
    bad["channel_scales"][0]["att.key"] = bad["channel_scales"][0]["att.key"][:3]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ThresholdError, match="bad.json: layer 0 att.key: per-neuron scales must be"):
        apply_thresholds(small_rwkv, tmp_path / "bad.json")
    with pytest.raises(GraphError, match="one per input"):
        Threshold("t", n=4, theta=[0.1, 0.2])
    with pytest.raises(GraphError, match="score bound"):
        Threshold("t", n=2, theta=[0.1, 0.2])


@pytest.mark.parametrize("kind", ["wina", "gradient"])
def test_the_trace_engine_follows_a_per_neuron_graph(kind, tmp_path):
    """A graph with per-neuron θ simulated over text by the trace engine (masks from the torch model, which takes
    the graph's θ vectors and is checked to hold them bit for bit) counts what the message engine counts, to the
    rounding of torch's sequence mode at θ."""
    import json

    from eventllm.cli import main
    from eventllm.models.registry import load_model
    from eventllm.sparsity.thresholds import apply_thresholds, save_thresholds
    from tests.conftest import DATA
    from tests.test_process import SHIPPED_THRESHOLDS

    text = DATA / "gutenberg" / "moby_dick.txt"
    if not text.exists():
        pytest.skip(f"shared data not found at {text}")
    model = load_model("zoo:rwkv4-tiny").model.eval()
    apply_thresholds(model, SHIPPED_THRESHOLDS)
    _per_neuron(model, kind)
    save_thresholds(model, tmp_path / "w.json", "zoo:rwkv4-tiny")
    g, m = tmp_path / "g", tmp_path / "m.json"
    assert main(["build", "--model", "zoo:rwkv4-tiny", "--thresholds", str(tmp_path / "w.json"), "--tokens", "8", "-o", str(g)]) == 0
    assert main(["map", str(g), "-o", str(m), "--no-heatmap"]) == 0
    out = {}
    for engine in ("trace", "message"):
        assert main(["simulate", str(g), "--mapping", str(m), "--data", str(text), "--max-tokens", "128", "--engine", engine,
                     "--json", str(tmp_path / f"{engine}.json"), "-q"]) == 0
        out[engine] = json.loads((tmp_path / f"{engine}.json").read_text())
    assert out["trace"]["activation_sparsity"] == pytest.approx(out["message"]["activation_sparsity"], abs=1e-3)
    assert out["trace"]["energy_per_token_j"] == pytest.approx(out["message"]["energy_per_token_j"], rel=1e-3)
