"""Compose a two-layer event-driven network from scratch, run it, save it and look at it as a networkx graph.

    python examples/build_graph_by_hand.py

Token → embedding row → Threshold(θ=0.5) → Dense 3→2 → ReLU → Dense 2→2 (output). Every number below can
be checked by hand: the executor counts one synaptic operation per input event per output row.
"""

import tempfile

import numpy as np

from eventllm.process.executor import Executor
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Dense, Embedding, ReLU, Threshold


def build() -> ProcessGraph:
    emb = Embedding("emb", weights=np.array([[0.0, 0.0, 0.0], [0.2, -0.9, 1.5], [1.0, 1.0, 1.0], [0.4, 0.0, -0.6]]))
    gate = Threshold("gate", n=3, theta=0.5)
    hidden = Dense("hidden", weights=np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    relu = ReLU("relu", n=2)
    out = Dense("out", weights=np.array([[2.0, 1.0], [1.0, 1.0]]))
    emb.out.connect(gate.inp)  # Lava style: out-port → in-port, sizes checked
    gate.out.connect(hidden.inp)
    hidden.out.connect(relu.inp)
    relu.out.connect(out.inp)
    return ProcessGraph([emb, gate, hidden, relu, out], output="out.out")


def main() -> dict:
    graph = build()
    ex = Executor(graph)
    y = ex.step(1)  # embedding [0.2, -0.9, 1.5] → θ keeps -0.9, 1.5 → hidden [1.5, -0.9] → relu [1.5, 0] → [3.0, 1.5]
    print("output for token 1:", y.tolist())
    for name, c in ex.counts.per_process.items():
        print(f"  {name:7s} events in {c['events_in']}, events out {c['events_out']}, synaptic ops {c['synops']}")
    with tempfile.TemporaryDirectory() as folder:
        graph.save(folder)
        again = ProcessGraph.load(folder)
        assert np.array_equal(Executor(again).step(1), y)
    g = graph.to_networkx()
    print("networkx:", g.number_of_nodes(), "nodes,", g.number_of_edges(), "edges:",
          [f"{u}->{v}" for u, v in g.edges()])
    return {"output": y, "counts": ex.counts.per_process}


if __name__ == "__main__":
    main()
