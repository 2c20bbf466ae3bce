"""SANA-FE as a second opinion: our counts equal its counts, our energy and latency agree under identical costs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from eventllm.process.library import Dense
from mapping.topology import load_topology
from sim import sanafe as sf
from sim.costs import load_costs

pytest.importorskip("sanafe", reason="sanafe is installed by `make setup`")

ROOT = Path(__file__).resolve().parent.parent
PROJECTIONS = ["L0.ffn.key", "L0.att.key", "L0.ffn.value"]


@pytest.fixture(scope="module")
def tiny():
    """zoo:rwkv4-tiny with its shipped thresholds, mapped onto the loihi mesh, and the comparison of three projections of
    its first block over a prompt (one SANA-FE run each at our costs, simple and detailed, and at loihi.yaml)."""
    from eventllm.pipeline import build, load, place, sanafe_compare

    loaded = load("zoo:rwkv4-tiny", "shipped")
    ids = loaded.tokenizer.encode("It was a bright cold day in April, and the clocks were striking thirteen.")[:16]
    hw = place(build(loaded.model, "zoo:rwkv4-tiny", ids), "loihi")
    return hw, loaded, ids, sanafe_compare(hw, loaded.model, ids, PROJECTIONS)


def test_counts_equal_and_energy_within_one_percent(tiny):
    hw, _, ids, result = tiny
    assert result["tokens"] == len(ids) and [r["name"] for r in result["projections"]] == sorted(PROJECTIONS, key=[
        p.name for p in hw.graph.topological_order()].index)
    for r in result["projections"]:
        ours, theirs = r["ours"], r["sanafe"]
        assert ours["source_events"] == theirs["source_events"] > 0
        assert ours["synaptic_events"] == theirs["synaptic_events"] > 0
        assert ours["hops"] == theirs["hops"]
        assert ours["messages_per_destination_core"] == theirs["messages"]  # SANA-FE's rule, counted by us
        assert abs(r["agreement"]["energy_j"]) < 0.01
        assert theirs["energy_by_part_j"]["synapse"] == pytest.approx(ours["energy_by_part_j"]["synapse"], rel=1e-9)
        assert theirs["latency_s"] == pytest.approx(ours["latency_s"], rel=0.01)  # simple timing: the same terms


def test_network_energy_difference_is_the_accounting(tiny):
    """What differs by design, to the joule: SANA-FE sends a message to the source's own core too (one per destination
    core, each priced `packet`), and has no chip-to-chip links (ours: `chip_link` per crossing)."""
    hw, _, _, result = tiny
    e = hw.costs.energy
    for r in result["projections"]:
        ours, theirs = r["ours"], r["sanafe"]
        explained = (theirs["messages"] - ours["messages"]) * e["packet"] - ours["chip_crossings"] * e["chip_link"]
        diff = theirs["energy_by_part_j"]["network"] - ours["energy_by_part_j"]["network"]
        assert diff == pytest.approx(explained, rel=1e-9, abs=1e-18)


def test_detailed_timing_and_loihi_yaml_run(tiny):
    _, _, _, result = tiny
    for r in result["projections"]:
        assert r["sanafe_detailed"]["latency_s"] >= r["sanafe"]["latency_s"]  # hop latency and queues on top
        assert r["sanafe_loihi_yaml"]["synaptic_events"] == r["sanafe"]["synaptic_events"]
    m = result["model"]
    assert m["energy_per_token_j"] > m["projections_energy_per_token_j"] > 0


def test_hand_count(tmp_path):
    """Three sources on core 0 of a 2x2 mesh, two targets on core 3 (2 hops), 3 steps, at the loihi preset's costs."""
    sanafe = sf.require_sanafe()
    topo, costs = load_topology("loihi:2x2"), load_costs("loihi")
    graph = {"d": Dense("d", weights=np.ones((2, 3), np.float32))}
    unit = sf.unit_of(graph["d"])
    proj = sf.Projection("d", "src.out", 3, [(0, 0, 3)], [{"shard": 0, "core": 3, "rows": (0, 2), "inputs": (0, 3), "unit": unit}])
    mask = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1]], bool).T  # per step: sources 0 and 2, 1 and 2, all three
    arch = sanafe.load_arch(str(sf.write_architecture(sf.architecture(topo, costs, [proj]), tmp_path / "arch.yaml")))
    r = sf.run_projection(sanafe, arch, graph, proj, mask)
    events = 7
    e = costs.energy
    assert (r["source_events"], r["synaptic_events"], r["messages"], r["hops"]) == (events, 2 * events, events, 2 * events)
    parts = {"synapse": 2 * events * e["synop"], "neuron": events * e["event_out"],
             "network": events * (e["packet"] + e["event_in"]) + 2 * events * e["noc_hop"]}
    for k, v in parts.items():
        assert r["energy_by_part_j"][k] == pytest.approx(v, rel=1e-6)
    cy, clock = costs.cycles, topo.core.clock_hz
    per_step = [2, 2, 3]  # messages into core 3 per step, each: event_in + 2 synapses
    assert r["latency_s"] == pytest.approx(sum(m * (cy["event_in"] + 2 * cy["synop"]) for m in per_step) / clock / 3, rel=1e-6)


def test_cli_writes_the_sanafe_block(tiny, tmp_path, capsys):
    from eventllm.cli import main

    hw, _, ids, _ = tiny
    hw.graph.save(tmp_path / "g")
    hw.mapping.save(tmp_path / "m.json")
    out = tmp_path / "s.json"
    assert main(["simulate", str(tmp_path / "g"), "--mapping", str(tmp_path / "m.json"), "--backend", "sanafe",
                 "--sanafe-projections", "L0.ffn.value", "--token-ids", ",".join(map(str, ids[:6])), "--json", str(out), "-q"]) == 0
    assert "SANA-FE beside eventllm" in capsys.readouterr().out
    block = json.loads(out.read_text())["sanafe"]
    (row,) = block["projections"]
    assert row["name"] == "L0.ffn.value"
    for side in ("ours", "sanafe"):
        assert {"synaptic_events", "messages", "hops", "energy_j", "latency_s"} <= set(row[side])
    assert row["ours"]["synaptic_events"] == row["sanafe"]["synaptic_events"]


def test_missing_package_is_one_line(monkeypatch, capsys, tmp_path):
    from eventllm.cli import main

    monkeypatch.setitem(sys.modules, "sanafe", None)  # `import sanafe` raises ImportError
    code = main(["simulate", str(tmp_path / "g"), "--mapping", str(tmp_path / "m.json"), "--backend", "sanafe", "--token-ids", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "sanafe" in err and "make setup" in err and "Traceback" not in err


def test_sanafe_options_need_the_backend(capsys, tmp_path):
    from eventllm.cli import main

    code = main(["simulate", str(tmp_path / "g"), "--mapping", str(tmp_path / "m.json"), "--sanafe-layer", "0", "--token-ids", "1"])
    assert code == 2 and "add --backend sanafe" in capsys.readouterr().err


def test_per_core_messages_option_is_sanafes_count(tiny):
    """With the cost table's `messages = "per_core"` our simulator counts messages as SANA-FE does: then the network
    energy differs only by our chip-to-chip links."""
    from dataclasses import replace

    from eventllm.pipeline import Hardware, sanafe_compare

    hw, loaded, ids, _ = tiny
    costs = replace(hw.costs, messages="per_core")
    result = sanafe_compare(Hardware(hw.graph, hw.mapping, costs), loaded.model, ids, ["L0.att.key"], timings=("simple",))
    (r,) = result["projections"]
    ours, theirs = r["ours"], r["sanafe"]
    assert ours["messages"] == theirs["messages"] == ours["messages_per_destination_core"] > 0
    diff = theirs["energy_by_part_j"]["network"] - ours["energy_by_part_j"]["network"]
    assert diff == pytest.approx(-ours["chip_crossings"] * costs.energy["chip_link"], rel=1e-9, abs=1e-18)


def test_messages_option_is_checked(tmp_path):
    from eventllm.errors import ConfigError

    text = (ROOT / "sim" / "presets" / "loihi.toml").read_text().replace('topology = "loihi"', 'topology = "loihi"\nmessages = "per_neuron"')
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match="messages = 'per_neuron'; use one of per_shard, per_core"):
        load_costs(str(tmp_path / "c.toml"))
    assert load_costs("loihi").messages == "per_shard"
