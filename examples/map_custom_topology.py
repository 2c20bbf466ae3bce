"""Map zoo:rwkv4-tiny onto a topology defined in TOML (examples/custom_topology.toml) and onto the SENECA preset.

    python examples/map_custom_topology.py [--output out/custom_topology]
"""

import argparse
from pathlib import Path

from eventllm.models.registry import load_model
from eventllm.process.build import build_graph
from mapping import map_graph

HERE = Path(__file__).resolve().parent


def main(output: str = "out/custom_topology") -> dict:
    graph = build_graph(load_model("zoo:rwkv4-tiny").model, name="zoo:rwkv4-tiny")
    results = {}
    for topology in (str(HERE / "custom_topology.toml"), "seneca"):
        m = map_graph(graph, topology)
        s = m.summary()
        results[m.topology.name] = s
        print(f"{m.topology.name:>11}: {m.topology.rows}x{m.topology.cols} {m.topology.noc.kind}, {s['cores_used']} cores used, "
              f"max {s['core_memory_max'] / 1024:.0f} KiB per core, events x hops per token {s['hop_traffic']:,.0f}")
        m.save(Path(output) / f"{m.topology.name}.json")
        m.heatmap(Path(output) / f"{m.topology.name}.png")
    print(f"wrote {output}/")
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", default="out/custom_topology")
    main(ap.parse_args().output)
