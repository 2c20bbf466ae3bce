"""A process kind lives in one place: a new kind defined in this file alone (its process and its process
model) runs through the executor, the partitioner and the simulator with counts a hand count predicts."""

import numpy as np
import pytest

from eventllm.errors import GraphError
from eventllm.process.core import KINDS, Process
from eventllm.process.executor import Executor
from eventllm.process.graph import ProcessGraph
from eventllm.process.library import Dense, Embedding
from eventllm.process.models import ProcessModel, implements, model_for
from mapping import map_graph
from mapping.topology import parse_topology
from sim.costs import load_costs
from sim.engine import COUNTERS, Simulator


class Clamp(Process):
    """A new neuron kind: clamps each entry to [-limit, limit]; a parameter and no state."""

    kind = "test_clamp"

    def __init__(self, name, *, n, limit=1.0, layer=None):
        super().__init__(name, layer, n=int(n))
        self._var("limit", limit, "param")
        self._in("inp", n)
        self._out("out", n)


@implements(Clamp)
class ClampModel(ProcessModel):
    ops_per_entry = 2  # a compare with each bound

    def run(self, inputs):
        lim = self.v["limit"]
        return {"out": np.clip(inputs["inp"], -lim, lim).astype(np.float32)}


def graph():
    emb = Embedding("emb", weights=np.array([[0.0, 3.0, -0.5], [2.0, 0.0, 0.0]], dtype=np.float32))
    clamp = Clamp("clamp", n=3, limit=1.0)
    head = Dense("head", weights=np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0]], dtype=np.float32))
    emb.out.connect(clamp.inp)
    clamp.out.connect(head.inp)
    return ProcessGraph([emb, clamp, head], "head.out")


def test_a_kind_defined_here_registers_itself_and_round_trips(tmp_path):
    assert KINDS["test_clamp"] is Clamp
    g = graph()
    g.save(tmp_path / "g")
    loaded = ProcessGraph.load(tmp_path / "g")
    assert type(loaded["clamp"]) is Clamp and loaded["clamp"].vars["limit"].value == 1.0


def test_the_new_kind_runs_in_the_executor_the_partitioner_and_the_simulator():
    g = graph()
    ex = Executor(g)
    assert ex.run([0]).tolist() == [[0.5, -1.0]]  # clamp([0, 3, -0.5]) = [0, 1, -0.5]
    topo = parse_topology({"core": {"memory_bytes": 24, "word_bits": 16, "npe": 1, "clock_hz": 1e9},
                           "mesh": {"rows": 1, "cols": 3}}, "hand")
    m = map_graph(g, topo, placement="sequential")
    assert [s.process for s in m.shards] == ["emb", "clamp", "head"] and m.cores_used == 3
    sim = Simulator(g, m, load_costs("seneca"))
    assert sim.step(0).tolist() == [0.5, -1.0]
    c = dict(zip(COUNTERS, sim.result.counts.sum(0)))
    # clamp: 3 entries updated, 2 ops each (its model's ops_per_entry), one parameter read; 2 events out
    clamp = dict(zip(COUNTERS, sim.result.counts[[s.id for s in m.shards if s.process == "clamp"][0]]))
    assert clamp["neuron_updates"] == 3 and clamp["neuron_ops"] == 6 and clamp["param_reads"] == 1
    assert clamp["events_in"] == 2 and clamp["events_out"] == 2
    assert c["synops"] == 2 * 2  # head: 2 input events x 2 outputs


def test_a_process_without_a_model_is_an_error_not_a_default():
    class Orphan(Process):
        kind = "test_orphan"

        def __init__(self, name):
            super().__init__(name)
            self._in("inp", 1)
            self._out("out", 1)

    with pytest.raises(GraphError, match="no process model implements Orphan"):
        model_for(Orphan("o"))
    with pytest.raises(GraphError, match="ops_per_entry"):
        @implements(Orphan)
        class Silent(ProcessModel):  # says nothing about its cost
            def run(self, inputs):
                return inputs


def test_the_graph_is_not_changed_by_running_it():
    g = graph()
    before = {p.name: {n: v.value.copy() for n, v in p.vars.items()} for p in g}
    ex = Executor(g, overrides={"limit": 0.25})
    assert ex.run([0]).tolist() == [[0.0, -0.25]]  # an override is an option of this run
    assert Executor(g).run([0]).tolist() == [[0.5, -1.0]]
    assert all(np.array_equal(v.value, before[p.name][n]) for p in g for n, v in p.vars.items())
