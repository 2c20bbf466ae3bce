"""Run part of a saved process graph on lava-nc's CPU simulator and record what it computes.

lava-nc installs only on Python 3.10, so this module runs in the separate environment that `make setup`
builds (`.venv-lava`), without torch:

    .venv-lava/bin/python -m eventllm.process.lava.bridge GRAPH --prefix L0. --inputs in.npz \
        --probe L0.ffn.residual.out --output lava.npz

Each of our processes becomes a real lava-nc process: the projections are lava's own `Dense`
(`lava.proc.dense`, graded spikes with `num_message_bits=24`), every other operation is a lava process
defined here with a Python process model (`floating_pt`, float64) written for lava's LoihiProtocol. The
network runs on `Loihi2SimCfg`.

Timing. Lava's Dense delivers W·s(t−1) at step t (one step of synaptic delay), so a token cannot pass a
block in one lava time step. Each token is therefore held at the input for `hold` steps (more than the
number of Dense processes on any path), and a process that keeps state commits its new state only at the
last step at which all of its inputs show the current token (its earliest input delay modulo `hold`).
The recorded values are read at that step of every token. This is an exact re-timing, not an
approximation: the results equal one-token-per-step execution up to float rounding.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.graph import ProcessGraph
from eventllm.process.models import model_class_for

try:
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, OutPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
    from lava.proc.dense.process import Dense as LavaDense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the Lava bridge needs lava-nc ({e}); run it with the Python 3.10 environment `make setup` builds: "
        ".venv-lava/bin/python -m eventllm.process.lava.bridge …"
    ) from None

UNARY = ("layer_norm", "threshold", "sigmoid", "relu", "squared_relu")
BINARY = ("add", "multiply")


# --- lava processes (what they are) -------------------------------------------------------------------------
class Unary(AbstractProcess):
    """One input vector → one output vector, pointwise or LayerNorm. `op` picks the operation."""

    def __init__(self, *, op: str, n: int, weight=None, bias=None, theta: float = 0.0, eps: float = 1e-5, **kw):
        super().__init__(op=op, n=n, eps=eps, **kw)
        self.inp = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))
        self.weight = Var(shape=(n,), init=np.ones(n) if weight is None else weight)
        self.bias = Var(shape=(n,), init=np.zeros(n) if bias is None else bias)
        self.theta = Var(shape=(1,), init=np.array([theta]))


class Binary(AbstractProcess):
    """Two input vectors a, b → a + b or a ⊙ b."""

    def __init__(self, *, op: str, n: int, **kw):
        super().__init__(op=op, n=n, **kw)
        self.a = InPort(shape=(n,))
        self.b = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))


class WKVRecurrence(AbstractProcess):
    """RWKV-4's WKV: inputs k, v; state a, b, p; committed once per token (see the module docstring)."""

    def __init__(self, *, time_decay, time_first, hold: int, commit: int, **kw):
        n = len(time_decay)
        super().__init__(hold=hold, commit=commit, **kw)
        self.k = InPort(shape=(n,))
        self.v = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))
        self.time_decay = Var(shape=(n,), init=time_decay)
        self.time_first = Var(shape=(n,), init=time_first)
        self.a = Var(shape=(n,), init=0)
        self.b = Var(shape=(n,), init=0)
        self.p = Var(shape=(n,), init=-1e38)


class ShiftMix2(AbstractProcess):
    """RWKV token shift with two mixes (ChannelMix: k, r); state `prev` committed once per token."""

    def __init__(self, *, mix_k, mix_r, hold: int, commit: int, **kw):
        n = len(mix_k)
        super().__init__(hold=hold, commit=commit, **kw)
        self.inp = InPort(shape=(n,))
        self.k = OutPort(shape=(n,))
        self.r = OutPort(shape=(n,))
        self.mix_k = Var(shape=(n,), init=mix_k)
        self.mix_r = Var(shape=(n,), init=mix_r)
        self.prev = Var(shape=(n,), init=0)


class ShiftMix3(AbstractProcess):
    """RWKV token shift with three mixes (TimeMix: k, v, r)."""

    def __init__(self, *, mix_k, mix_v, mix_r, hold: int, commit: int, **kw):
        n = len(mix_k)
        super().__init__(hold=hold, commit=commit, **kw)
        self.inp = InPort(shape=(n,))
        self.k = OutPort(shape=(n,))
        self.v = OutPort(shape=(n,))
        self.r = OutPort(shape=(n,))
        self.mix_k = Var(shape=(n,), init=mix_k)
        self.mix_v = Var(shape=(n,), init=mix_v)
        self.mix_r = Var(shape=(n,), init=mix_r)
        self.prev = Var(shape=(n,), init=0)


# --- lava process models (how they run) ---------------------------------------------------------------------
def _commits(model) -> bool:
    """True at the one time step of each token at which a stateful process takes its new state."""
    hold, lo = model.proc_params["hold"], model.proc_params["commit"]
    # token t's inputs are all present until step (t + 1)·hold + lo; earlier steps ≡ lo are start-up
    return model.time_step >= hold + lo and model.time_step % hold == lo % hold


@implements(proc=Unary, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyUnaryModel(PyLoihiProcessModel):
    inp: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    theta: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        x = self.inp.recv()
        op = self.proc_params["op"]
        if op == "layer_norm":
            y = (x - x.mean()) / np.sqrt(x.var() + self.proc_params["eps"]) * self.weight + self.bias
        elif op == "threshold":
            y = np.where(np.abs(x) > self.theta[0], x, 0.0)
        elif op == "sigmoid":
            y = 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow
        elif op == "relu":
            y = np.maximum(x, 0.0)
        else:  # squared_relu
            y = np.maximum(x, 0.0) ** 2
        self.out.send(y)


@implements(proc=Binary, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyBinaryModel(PyLoihiProcessModel):
    a: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    b: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self):
        a, b = self.a.recv(), self.b.recv()
        self.out.send(a + b if self.proc_params["op"] == "add" else a * b)


@implements(proc=WKVRecurrence, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyWKVModel(PyLoihiProcessModel):
    k: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    time_decay: np.ndarray = LavaPyType(np.ndarray, float)
    time_first: np.ndarray = LavaPyType(np.ndarray, float)
    a: np.ndarray = LavaPyType(np.ndarray, float)
    b: np.ndarray = LavaPyType(np.ndarray, float)
    p: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        k, v = self.k.recv(), self.v.recv()
        # wkv = (e^p·a + e^(u+k)·v) / (e^p·b + e^(u+k)), everything scaled by the larger exponent
        bonus = self.time_first + k
        m = np.maximum(self.p, bonus)
        old, new = np.exp(self.p - m), np.exp(bonus - m)
        self.out.send((old * self.a + new * v) / (old * self.b + new))
        if _commits(self):
            decayed = self.p - np.exp(self.time_decay)
            m = np.maximum(decayed, k)
            old, new = np.exp(decayed - m), np.exp(k - m)
            self.a = old * self.a + new * v
            self.b = old * self.b + new
            self.p = m


class _PyShiftMixModel(PyLoihiProcessModel):
    inp: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    prev: np.ndarray = LavaPyType(np.ndarray, float)
    PORTS: tuple[str, ...] = ()

    def run_spk(self):
        x = self.inp.recv()
        for port in self.PORTS:
            ratio = getattr(self, "mix_" + port)
            getattr(self, port).send(ratio * x + (1.0 - ratio) * self.prev)
        if _commits(self):
            self.prev = x.copy()


@implements(proc=ShiftMix2, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyShiftMix2Model(_PyShiftMixModel):
    k: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    r: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    mix_k: np.ndarray = LavaPyType(np.ndarray, float)
    mix_r: np.ndarray = LavaPyType(np.ndarray, float)
    PORTS = ("k", "r")


@implements(proc=ShiftMix3, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyShiftMix3Model(_PyShiftMixModel):
    k: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    r: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    mix_k: np.ndarray = LavaPyType(np.ndarray, float)
    mix_v: np.ndarray = LavaPyType(np.ndarray, float)
    mix_r: np.ndarray = LavaPyType(np.ndarray, float)
    PORTS = ("k", "v", "r")


# --- graph → lava network -----------------------------------------------------------------------------------
def input_delays(sub: ProcessGraph) -> dict[str, tuple[int, int]]:
    """(min, max) number of lava time steps between the network input and each process's inputs.

    Every Dense on the way adds one step (lava's Dense sends what it computed the step before).
    """
    delay: dict[str, tuple[int, int]] = {}
    for p in sub.topological_order():
        ins = []
        for port in p.in_ports.values():
            src = port.sources[0].src.process if port.sources else None
            if src is None or src.name not in sub.processes:
                ins.append((0, 0))
            else:
                lo, hi = delay[src.name]
                extra = 1 if model_class_for(src).synaptic else 0
                ins.append((lo + extra, hi + extra))
        delay[p.name] = (min(i[0] for i in ins), max(i[1] for i in ins))
    return delay


def _lava_process(p, hold: int, commit: int):
    """The Lava process for `p`: its process model names the counterpart (`ProcessModel.lava`)."""
    v = {n: var.value.astype(np.float64) for n, var in p.vars.items()}
    counterpart = model_class_for(p).lava
    if counterpart == "lava.proc.dense.process.Dense":
        if "bias" in v:
            raise GraphError(f"{p.name}: Dense with a bias is not bridged to Lava yet (RWKV-4 has none)")
        return LavaDense(weights=v["weights"], num_message_bits=24, name=p.name)
    if counterpart == "Unary" and p.kind in UNARY:
        n = p.in_ports["inp"].size
        return Unary(op=p.kind, n=n, weight=v.get("weight"), bias=v.get("bias"),
                     theta=float(v["theta"]) if "theta" in v else 0.0, eps=p.attrs.get("eps", 1e-5), name=p.name)
    if counterpart == "Binary" and p.kind in BINARY:
        return Binary(op=p.kind, n=p.out_ports["out"].size, name=p.name)
    if counterpart == "WKV":
        return WKVRecurrence(time_decay=v["time_decay"], time_first=v["time_first"], hold=hold, commit=commit, name=p.name)
    if counterpart == "ShiftMix":
        mixes = {n: a for n, a in v.items() if n.startswith("mix_")}
        cls = {("mix_k", "mix_r"): ShiftMix2, ("mix_k", "mix_r", "mix_v"): ShiftMix3}.get(tuple(sorted(mixes)))
        if cls is None:
            raise GraphError(f"{p.name}: a token shift with mixes {sorted(mixes)} is not bridged to Lava")
        return cls(**mixes, hold=hold, commit=commit, name=p.name)
    raise GraphError(f"{p.name}: {type(p).__name__} ({p.kind}) has no Lava counterpart yet (its process model's `lava` "
                     f"is {counterpart!r}; bridged: Dense, WKV, ShiftMix, {', '.join(UNARY + BINARY)})")


_DENSE_PORTS = {"inp": "s_in", "out": "a_out"}  # lava's Dense names its ports s_in and a_out


def _port(lava_proc, port) -> object:
    name = _DENSE_PORTS[port.name] if model_class_for(port.process).lava == "lava.proc.dense.process.Dense" else port.name
    return getattr(lava_proc, name)


def run_on_lava(graph: ProcessGraph, prefix: str, inputs: dict[str, np.ndarray], probes: list[str]) -> dict[str, np.ndarray]:
    """Run the processes whose names start with `prefix` on Lava for every token of `inputs`.

    `inputs` maps each out-port that feeds the part from outside ('ln0.out') to its values [T, n]; the result
    maps each probed out-port of the part to its values [T, n].
    """
    sub = ProcessGraph([p for p in graph if p.name.startswith(prefix)], output=probes[0])
    if len(sub) == 0:
        raise GraphError(f"no process name starts with {prefix!r}")
    delays = input_delays(sub)
    hold = max(hi for _, hi in delays.values()) + 2
    steps_per = {}
    n_tokens = len(next(iter(inputs.values())))
    total = n_tokens * hold + hold
    lava = {p.name: _lava_process(p, hold, delays[p.name][0]) for p in sub}
    sources = {}
    for port in sub.inputs():
        src = port.sources[0].src.path if port.sources else None
        if src not in inputs:
            raise GraphError(f"{port.path} is fed from {src} outside {prefix!r}; pass its values in the inputs file")
        if src not in sources:
            values = np.asarray(inputs[src], dtype=np.float64)  # [T, n] → held `hold` steps per token
            data = np.repeat(values, hold, axis=0)
            data = np.concatenate([data, np.repeat(values[-1:], total - len(data), axis=0)]).T
            sources[src] = Source(data=data)
        sources[src].s_out.connect(_port(lava[port.process.name], port))
    for c in sub.connections():
        _port(lava[c.src.process.name], c.src).connect(_port(lava[c.dst.process.name], c.dst))
    sinks = {}
    for path in probes:
        port = sub.port(path)
        sinks[path] = Sink(shape=(port.size,), buffer=total)
        _port(lava[port.process.name], port).connect(sinks[path].a_in)
        # the value for token t is valid from step t·hold + max delay + 1 to (t+1)·hold + min delay
        lo, _ = delays[port.process.name]
        steps_per[path] = lo + (1 if model_class_for(port.process).synaptic else 0)
    first = next(iter(sources.values()))
    first.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
    try:
        out = {}
        for path, sink in sinks.items():
            data = sink.data.get()  # [n, total]; column s holds time step s + 1
            read = [(t + 1) * hold + steps_per[path] - 1 for t in range(n_tokens)]
            out[path] = data[:, read].T
    finally:
        first.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eventllm.process.lava.bridge", description=__doc__.split("\n")[0])
    ap.add_argument("graph", help="graph folder (eventllm build)")
    ap.add_argument("--prefix", default="L0.", help="run the processes whose names start with this (default: %(default)s)")
    ap.add_argument("--inputs", required=True, help=".npz: for each out-port feeding the part from outside, values [T, n]")
    ap.add_argument("--probe", action="append", required=True, help="out-port to record, e.g. L0.ffn.residual.out")
    ap.add_argument("--output", required=True, help=".npz to write the recorded values to")
    args = ap.parse_args(argv)
    try:
        graph = ProcessGraph.load(args.graph)
        inputs = dict(np.load(args.inputs))
        result = run_on_lava(graph, args.prefix, inputs, args.probe)
    except GraphError as e:
        print(f"lava_bridge: error: {e}", file=sys.stderr)
        return 2
    np.savez(args.output, **result)
    print(f"lava_bridge: ran {args.prefix}* on Loihi2SimCfg for {len(inputs[next(iter(inputs))])} tokens; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
