"""The Lava processes (what they are) and their Python process models (how they run on lava-nc's CPU backend).

Projections are lava's own `Dense` (`lava.proc.dense`, graded spikes with `num_message_bits=24`); a Dense
with a bias is the hierarchical `BiasedDense` (lava's Dense followed by a bias process). A projection with
integer weights fed by int8 events is the hierarchical `FixedPointDense`: the events' integers go through
lava's Dense run by lava's own bit-accurate fixed-point model (integer weights, integer sums), then the sums
are scaled back. Every other operation of our graphs is a process defined here with a `floating_pt` model
(float64) for lava's LoihiProtocol.

Timing (see `eventllm.process.lava.network`): each token is held for `hold` lava time steps; lava's Dense
delivers W·s(t−1) at step t, so values settle along a path within the window. A process with state takes its
new state only at the last step of each window (`time_step % hold == 0`), where all its inputs show the
current token, and counts its events there: `counts_in` (non-zero entries per in-port) and `counts_out`
(per out-port) — the events it received and sent, read by the host through Lava's Var get.

This module runs under Python 3.10 with lava-nc, without torch.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.model.sub.model import AbstractSubProcessModel
    from lava.magma.core.process.ports.ports import InPort, OutPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
    from lava.proc.dense.models import AbstractPyDenseModelBitAcc
    from lava.proc.dense.process import Dense as LavaDense
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the Lava bridge needs lava-nc ({e}); run it with the Python 3.10 environment `make setup` builds: "
        ".venv-lava/bin/python -m eventllm.process.lava.bridge …"
    ) from None

UNARY = ("layer_norm", "group_norm", "head_l2norm", "threshold", "sigmoid", "tanh", "rwkv7_decay", "relu", "squared_relu",
         "bias")
BINARY = ("add", "multiply", "rwkv7_key")
DECAY_SCALE = math.exp(-0.5)  # RWKV-7's decay w = exp(−e^−½ · σ(x)), as eventllm.models.rwkv7
FLOAT = "floating_pt"


# --- processes ----------------------------------------------------------------------------------------------
class Counted(AbstractProcess):
    """A process of ours: `hold` steps per token, and event counters per in-port and out-port."""

    def __init__(self, *, n_in: int, n_out: int, hold: int, **kw):
        super().__init__(hold=hold, **kw)
        self.counts_in = Var(shape=(max(n_in, 1),), init=0)
        self.counts_out = Var(shape=(max(n_out, 1),), init=0)


class TokenIn(Counted):
    """The token input: the host sets `token` before each window; out = table[token] (+ the position's row,
    OPT), and the position advances once per token."""

    def __init__(self, *, table, positions=None, offset: int = 0, hold: int, **kw):
        vocab, d = table.shape
        super().__init__(n_in=0, n_out=1, hold=hold, offset=int(offset), has_positions=positions is not None, **kw)
        self.out = OutPort(shape=(d,))
        self.table = Var(shape=(vocab, d), init=table)
        pos = np.zeros((1, d)) if positions is None else positions
        self.positions = Var(shape=pos.shape, init=pos)
        self.token = Var(shape=(1,), init=0)
        self.position = Var(shape=(1,), init=0)


class Inject(AbstractProcess):
    """A vector fed from outside the network (the host sets `value` before each window)."""

    def __init__(self, *, n: int, **kw):
        super().__init__(**kw)
        self.out = OutPort(shape=(n,))
        self.value = Var(shape=(n,), init=0)


class Readout(AbstractProcess):
    """Records the vector arriving at the last step of each window in `value` (read with Var get)."""

    def __init__(self, *, n: int, hold: int, **kw):
        super().__init__(hold=hold, **kw)
        self.inp = InPort(shape=(n,))
        self.value = Var(shape=(n,), init=0)
        self.counts_in = Var(shape=(1,), init=0)


class Unary(Counted):
    """One vector in, one out: LayerNorm, threshold (scalar or per-neuron θ), sigmoid, tanh, ReLU, squared ReLU,
    a bias added, or RWKV-7's group norm (a LayerNorm within each of `n_head` heads), per-head L2 norm of x ⊙ weight
    and decay (`op`)."""

    def __init__(self, *, op: str, n: int, hold: int, weight=None, bias=None, theta=0.0, eps: float = 1e-5,
                 event_bits: int = 16, n_head: int = 1, **kw):
        super().__init__(n_in=1, n_out=1, hold=hold, op=op, eps=float(eps), event_bits=int(event_bits), n_head=int(n_head),
                         **kw)
        self.inp = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))
        self.weight = Var(shape=(n,), init=np.ones(n) if weight is None else weight)
        self.bias = Var(shape=(n,), init=np.zeros(n) if bias is None else bias)
        theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
        self.theta = Var(shape=theta.shape, init=theta)


class Binary(Counted):
    """Two vectors a, b in: a + b, a ⊙ b, or RWKV-7's key scaled by its in-context rate a ⊙ (1 + (b − 1) ⊙ weight)."""

    def __init__(self, *, op: str, n: int, hold: int, weight=None, **kw):
        super().__init__(n_in=2, n_out=1, hold=hold, op=op, **kw)
        self.a = InPort(shape=(n,))
        self.b = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))
        self.weight = Var(shape=(n,), init=np.ones(n) if weight is None else weight)


class WKVRecurrence(Counted):
    """RWKV-4's WKV: inputs k, v; state a, b, p."""

    def __init__(self, *, time_decay, time_first, hold: int, **kw):
        n = len(time_decay)
        super().__init__(n_in=2, n_out=1, hold=hold, **kw)
        self.k = InPort(shape=(n,))
        self.v = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))
        self.time_decay = Var(shape=(n,), init=time_decay)
        self.time_first = Var(shape=(n,), init=time_first)
        self.a = Var(shape=(n,), init=0)
        self.b = Var(shape=(n,), init=0)
        self.p = Var(shape=(n,), init=-1e38)


class TokenShift(Counted):
    """RWKV token shift: out-port X = mix_X ⊙ x + (1 − mix_X) ⊙ prev for each port X of `PORTS` (in our process's
    port order; `shift_class` makes the class of a port list); state `prev`."""

    PORTS: tuple[str, ...] = ()

    def __init__(self, *, mixes: dict, hold: int, **kw):
        n = len(mixes["mix_" + self.PORTS[0]])
        super().__init__(n_in=1, n_out=len(self.PORTS), hold=hold, **kw)
        self.inp = InPort(shape=(n,))
        for port in self.PORTS:
            setattr(self, port, OutPort(shape=(n,)))
            setattr(self, "mix_" + port, Var(shape=(n,), init=mixes["mix_" + port]))
        self.prev = Var(shape=(n,), init=0)


class CausalAttention(Counted):
    """OPT's multi-head self-attention of one token over a key/value cache (state: the cache and the position).
    In: qkv = [q; k; v]; q is scaled by `scale`."""

    def __init__(self, *, d: int, n_head: int, max_positions: int, scale: float, hold: int, **kw):
        super().__init__(n_in=1, n_out=1, hold=hold, d=int(d), n_head=int(n_head), scale=float(scale), **kw)
        self.qkv = InPort(shape=(3 * d,))
        self.out = OutPort(shape=(d,))
        self.k_cache = Var(shape=(max_positions, d), init=0)
        self.v_cache = Var(shape=(max_positions, d), init=0)
        self.position = Var(shape=(1,), init=0)


class BiasedDense(AbstractProcess):
    """out = W·inp + bias: lava's Dense and a bias process, as one hierarchical process."""

    def __init__(self, *, weights, bias, hold: int, **kw):
        n_out, n_in = weights.shape
        super().__init__(weights=weights, bias=bias, hold=hold, **kw)
        self.inp = InPort(shape=(n_in,))
        self.out = OutPort(shape=(n_out,))


class IntegerDense(LavaDense):
    """lava's Dense holding integer weights, run by lava's bit-accurate fixed-point model (`PyIntegerDenseModel`;
    a subclass, so that a float Dense in the same network keeps lava's float model)."""


class FixedPointDense(AbstractProcess):
    """out = scale ⊙ (Q · q) · s (+ bias) for int8 events inp = q · s: an EventEncoder takes the integers q and the
    token's scale s from the events, lava's Dense in fixed point (IntegerDense) sums Q · q in integers, and a
    Rescale process turns the sums back into values (weights: the integers Q, one scale per output)."""

    def __init__(self, *, weights, scale, bias=None, hold: int, **kw):
        n_out, n_in = weights.shape
        super().__init__(weights=weights, scale=scale, bias=bias, hold=hold, **kw)
        self.inp = InPort(shape=(n_in,))
        self.out = OutPort(shape=(n_out,))


class EventEncoder(Counted):
    """int8 graded events y = q · s (s = max |y| / 127, as the threshold sent them) → the integers q (`out`, the
    spikes' payload) and s (`scale`)."""

    def __init__(self, *, n: int, hold: int, **kw):
        super().__init__(n_in=1, n_out=1, hold=hold, **kw)
        self.inp = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))
        self.scale = OutPort(shape=(1,))


class Rescale(Counted):
    """The integer sums `a` of a fixed-point Dense and the events' scale `s` → a · s ⊙ scale (+ bias)."""

    def __init__(self, *, scale, bias=None, hold: int, **kw):
        n = len(scale)
        super().__init__(n_in=2, n_out=1, hold=hold, **kw)
        self.a = InPort(shape=(n,))
        self.s = InPort(shape=(1,))
        self.out = OutPort(shape=(n,))
        self.scale = Var(shape=(n,), init=scale)
        self.bias = Var(shape=(n,), init=np.zeros(n) if bias is None else bias)


class Block(AbstractProcess):
    """One layer of the model as a hierarchical process: in-ports `in_0…` and out-ports `out_0…` are the
    layer's connections to the rest of the network. Two process models: the SubProcessModel builds the layer's
    processes from the graph and wires them as the graph does (one Lava process each); the fused model runs
    them all inside one Lava process with our numpy process models (`block_class` makes both per port count).

    proc_params: `wire` (the network's builder, for the SubProcessModel), `members` (our processes, in order),
    `ins` / `outs` (the out-port paths behind in_i / out_j), `hold`, `commit_offset` (fused: the step of the
    window at which all in-ports show the token)."""

    def __init__(self, *, in_sizes: list[int], out_sizes: list[int], wire, members, ins: list[str], outs: list[str],
                 hold: int, commit_offset: int = 0, **kw):
        n_ports = sum(len(m.out_ports) for m in members)
        super().__init__(wire=wire, members=members, ins=ins, outs=outs, hold=hold, commit_offset=commit_offset, **kw)
        for i, n in enumerate(in_sizes):
            setattr(self, f"in_{i}", InPort(shape=(n,)))
        for i, n in enumerate(out_sizes):
            setattr(self, f"out_{i}", OutPort(shape=(n,)))
        self.counts_out = Var(shape=(n_ports,), init=0)  # the fused model's: events of every member out-port


# --- process models -----------------------------------------------------------------------------------------
def _nnz(x) -> int:
    return int(np.count_nonzero(x))


class _CountedModel(PyLoihiProcessModel):
    counts_in: np.ndarray = LavaPyType(np.ndarray, float)
    counts_out: np.ndarray = LavaPyType(np.ndarray, float)

    def commits(self) -> bool:
        """True at the last step of a token's window: the inputs all show the token; state and counts advance."""
        return self.time_step % self.proc_params["hold"] == 0

    def tally(self, ins, outs) -> None:
        if self.commits():
            if ins:
                self.counts_in = self.counts_in + np.array([_nnz(x) for x in ins], dtype=float)
            self.counts_out = self.counts_out + np.array([_nnz(y) for y in outs], dtype=float)


def _model(proc_class):
    """Bind a floating-point Python model to `proc_class` for lava's LoihiProtocol on CPU."""
    def wrap(cls):
        return implements(proc=proc_class, protocol=LoihiProtocol)(requires(CPU)(tag(FLOAT)(cls)))
    return wrap


@_model(TokenIn)
class PyTokenInModel(_CountedModel):
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    table: np.ndarray = LavaPyType(np.ndarray, float)
    positions: np.ndarray = LavaPyType(np.ndarray, float)
    token: np.ndarray = LavaPyType(np.ndarray, float)
    position: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        y = self.table[int(self.token[0])].copy()
        if self.proc_params["has_positions"]:  # summed in float32, as the graph's numbers are (the rows are float32)
            row = self.positions[int(self.position[0]) + self.proc_params["offset"]]
            y = (y.astype(np.float32) + row.astype(np.float32)).astype(np.float64)
        self.out.send(y)
        self.tally([], [y])
        if self.commits():
            self.position = self.position + 1


@_model(Inject)
class PyInjectModel(PyLoihiProcessModel):
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    value: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        self.out.send(self.value)


@_model(Readout)
class PyReadoutModel(PyLoihiProcessModel):
    inp: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    value: np.ndarray = LavaPyType(np.ndarray, float)
    counts_in: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        x = self.inp.recv()
        if self.time_step % self.proc_params["hold"] == 0:
            self.value = x.copy()
            self.counts_in = self.counts_in + _nnz(x)


@_model(Unary)
class PyUnaryModel(_CountedModel):
    inp: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    theta: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        x = self.inp.recv()
        op = self.proc_params["op"]
        heads = x.reshape(self.proc_params["n_head"], -1)
        if op in ("layer_norm", "group_norm"):
            mu = heads.mean(-1, keepdims=True)
            y = ((heads - mu) / np.sqrt(heads.var(-1, keepdims=True) + self.proc_params["eps"])).reshape(-1)
            y = y * self.weight + self.bias
        elif op == "head_l2norm":
            heads = heads * self.weight.reshape(heads.shape)
            y = (heads / np.maximum(np.linalg.norm(heads, axis=-1, keepdims=True), 1e-12)).reshape(-1)
        elif op == "threshold":
            y = np.where(np.abs(x) > self.theta, x, 0.0)
            if self.proc_params["event_bits"] == 8:  # int8 events, one scale per token, in float32 as the graph's
                y32 = y.astype(np.float32)
                s = np.abs(y32).max() / np.float32(127)
                y = (np.round(y32 / s) * s if s > 0 else y32).astype(np.float64)
        elif op == "sigmoid":
            y = 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow
        elif op == "tanh":
            y = np.tanh(x)
        elif op == "rwkv7_decay":
            y = np.exp(-DECAY_SCALE * 0.5 * (1.0 + np.tanh(0.5 * x)))
        elif op == "relu":
            y = np.maximum(x, 0.0)
        elif op == "squared_relu":
            y = np.maximum(x, 0.0) ** 2
        else:  # bias
            y = x + self.bias
        self.out.send(y)
        self.tally([x], [y])


@_model(Binary)
class PyBinaryModel(_CountedModel):
    a: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    b: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        a, b = self.a.recv(), self.b.recv()
        op = self.proc_params["op"]
        y = a + b if op == "add" else a * b if op == "multiply" else a * (1.0 + (b - 1.0) * self.weight)
        self.out.send(y)
        self.tally([a, b], [y])


@_model(WKVRecurrence)
class PyWKVModel(_CountedModel):
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
        y = (old * self.a + new * v) / (old * self.b + new)
        self.out.send(y)
        self.tally([k, v], [y])
        if self.commits():
            decayed = self.p - np.exp(self.time_decay)
            m = np.maximum(decayed, k)
            old, new = np.exp(decayed - m), np.exp(k - m)
            self.a = old * self.a + new * v
            self.b = old * self.b + new
            self.p = m


class _PyShiftMixModel(_CountedModel):
    inp: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    prev: np.ndarray = LavaPyType(np.ndarray, float)
    PORTS: tuple[str, ...] = ()

    def run_spk(self):
        x = self.inp.recv()
        outs = []
        for port in self.PORTS:
            ratio = getattr(self, "mix_" + port)
            outs.append(ratio * x + (1.0 - ratio) * self.prev)
            getattr(self, port).send(outs[-1])
        self.tally([x], outs)
        if self.commits():
            self.prev = x.copy()


@_model(CausalAttention)
class PyCausalAttentionModel(_CountedModel):
    qkv: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    k_cache: np.ndarray = LavaPyType(np.ndarray, float)
    v_cache: np.ndarray = LavaPyType(np.ndarray, float)
    position: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        qkv = self.qkv.recv()
        d, n_head = self.proc_params["d"], self.proc_params["n_head"]
        hd, pos = d // n_head, int(self.position[0])
        q = qkv[:d] * self.proc_params["scale"]
        keys = np.concatenate([self.k_cache[:pos], qkv[None, d : 2 * d]]).reshape(pos + 1, n_head, hd)
        values = np.concatenate([self.v_cache[:pos], qkv[None, 2 * d :]]).reshape(pos + 1, n_head, hd)
        scores = np.einsum("thd,hd->ht", keys, q.reshape(n_head, hd))
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        y = np.einsum("ht,thd->hd", scores / scores.sum(-1, keepdims=True), values).reshape(d)
        self.out.send(y)
        self.tally([qkv], [y])
        if self.commits():
            if pos >= len(self.k_cache):
                raise RuntimeError(f"the key/value cache holds {len(self.k_cache)} tokens and is full")
            self.k_cache[pos] = qkv[d : 2 * d]
            self.v_cache[pos] = qkv[2 * d :]
            self.position = self.position + 1


@implements(proc=BiasedDense, protocol=LoihiProtocol)
class SubBiasedDenseModel(AbstractSubProcessModel):
    """lava's Dense, then the bias added by a Unary('bias') (whose counts_out are the projection's events)."""

    def __init__(self, proc):
        p = proc.proc_params
        self.dense = LavaDense(weights=p["weights"], num_message_bits=24, name=proc.name + "/dense")
        self.bias = Unary(op="bias", n=p["weights"].shape[0], hold=p["hold"], bias=p["bias"], name=proc.name + "/bias")
        proc.in_ports.inp.connect(self.dense.s_in)
        self.dense.a_out.connect(self.bias.inp)
        self.bias.out.connect(proc.out_ports.out)
        proc.parts = {"dense": self.dense, "out": self.bias}  # "out": the part that sends (and counts) the outputs


@implements(proc=IntegerDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyIntegerDenseModel(AbstractPyDenseModelBitAcc):
    """lava's bit-accurate Dense model (the one lava tags fixed_pt), bound to IntegerDense."""


@_model(EventEncoder)
class PyEventEncoderModel(_CountedModel):
    inp: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=8)
    scale: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self):
        x = self.inp.recv()
        s = np.abs(x).max() / 127.0
        q = np.round(x / s).astype(np.int32) if s > 0 else np.zeros(x.shape, np.int32)
        self.out.send(q)
        self.scale.send(np.array([s]))
        self.tally([x], [q])


@_model(Rescale)
class PyRescaleModel(_CountedModel):
    a: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    scale: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        a, s = self.a.recv(), self.s.recv()
        y = a.astype(np.float64) * s[0] * self.scale + self.bias
        self.out.send(y)
        self.tally([a, s], [y])


@implements(proc=FixedPointDense, protocol=LoihiProtocol)
class SubFixedPointDenseModel(AbstractSubProcessModel):
    """EventEncoder → lava's Dense in fixed point → Rescale. Lava's bit-accurate Dense keeps 8-bit weights in
    mixed-sign mode as even numbers (it drops the lowest bit), so it holds 2Q and shifts the sums right by one
    (weight_exp = −1): exactly Q · q."""

    def __init__(self, proc):
        p = proc.proc_params
        q = np.asarray(p["weights"], dtype=np.int64)
        n_out, n_in = q.shape
        self.encode = EventEncoder(n=n_in, hold=p["hold"], name=proc.name + "/encode")
        self.dense = IntegerDense(weights=2 * q, num_message_bits=8, num_weight_bits=8, weight_exp=-1, name=proc.name + "/dense")
        self.rescale = Rescale(scale=p["scale"], bias=p["bias"], hold=p["hold"], name=proc.name + "/rescale")
        proc.in_ports.inp.connect(self.encode.inp)
        self.encode.out.connect(self.dense.s_in)
        self.encode.scale.connect(self.rescale.s)
        self.dense.a_out.connect(self.rescale.a)
        self.rescale.out.connect(proc.out_ports.out)
        proc.parts = {"encode": self.encode, "dense": self.dense, "out": self.rescale}


class _SubBlockModel(AbstractSubProcessModel):
    """The layer's processes, built and wired by the network's `wire(block)` at compile time."""

    def __init__(self, proc):
        members = proc.proc_params["wire"](proc)
        for i, member in enumerate(members.values()):  # lava finds a model's sub-processes among its attributes
            setattr(self, f"member_{i}", member)


class _PyFusedBlockModel(PyLoihiProcessModel):
    """The whole layer in this one Lava process: at the first step of each token's window at which its inputs
    show the token (`commit_offset` steps in) it runs the layer's processes in order with our numpy process
    models (float32, as the executor), taking their new state, and sends the layer's outputs from then to the
    end of the window; before that step it resends the last ones (values that are never read)."""

    counts_out: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        from eventllm.process.executor import process_inputs
        from eventllm.process.models import model_for

        self.process_inputs = process_inputs
        self.members = proc_params["members"]
        self.models = [model_for(m) for m in self.members]
        sizes = {f"{m.name}.{name}": port.size for m in self.members for name, port in m.out_ports.items()}
        self.last = [np.zeros(sizes[path]) for path in proc_params["outs"]]  # until the first token's values

    def run_spk(self):
        p = self.proc_params
        ins = [getattr(self, f"in_{i}").recv() for i in range(len(p["ins"]))]
        if (self.time_step - 1) % p["hold"] == p["commit_offset"]:  # the first step at which the inputs show the token
            values = {path: x.astype(np.float32) for path, x in zip(p["ins"], ins)}
            sent = []
            for m, model in zip(self.members, self.models):
                for name, y in model.run(self.process_inputs(m, values, None, set())).items():
                    values[f"{m.name}.{name}"] = y
                    sent.append(np.count_nonzero(y))
            self.counts_out = self.counts_out + np.array(sent, dtype=float)
            self.last = [values[path].astype(np.float64) for path in p["outs"]]
        for j, y in enumerate(self.last):
            getattr(self, f"out_{j}").send(y)


_SHIFTS: dict[tuple[str, ...], type] = {}


def shift_class(ports: tuple[str, ...]) -> type:
    """The TokenShift process class with out-ports `ports` (in this order) and its process model (lava declares a
    model's ports and Vars on its class, so each port list gets its own classes; RWKV-4 shifts k, v, r and k, r,
    RWKV-7's r, w, k, v, a, g and k)."""
    ports = tuple(ports)
    if ports not in _SHIFTS:
        name = "TokenShift_" + "_".join(ports)
        proc_cls = type(name, (TokenShift,), {"PORTS": ports, "__module__": __name__})
        types = {port: LavaPyType(PyOutPort.VEC_DENSE, float) for port in ports}
        types |= {"mix_" + port: LavaPyType(np.ndarray, float) for port in ports}
        annotations = {k: (np.ndarray if k.startswith("mix_") else PyOutPort) for k in types}
        model = type(f"Py{name}Model", (_PyShiftMixModel,), {**types, "PORTS": ports, "__annotations__": annotations,
                                                              "__module__": __name__})
        _model(proc_cls)(model)
        globals().update({proc_cls.__name__: proc_cls, model.__name__: model})  # where lava looks
        _SHIFTS[ports] = proc_cls
    return _SHIFTS[ports]


_BLOCKS: dict[tuple[int, int], type] = {}


def block_class(n_in: int, n_out: int) -> type:
    """The Block process class with `n_in` in-ports and `n_out` out-ports, with its two process models (lava
    binds a model to a class and declares its ports on the class, so each port count gets its own classes)."""
    key = (n_in, n_out)
    if key not in _BLOCKS:
        name = f"Block{n_in}x{n_out}"
        proc_cls = type(name, (Block,), {"__module__": __name__})
        sub = type(f"Sub{name}Model", (_SubBlockModel,), {"__module__": __name__})
        ports = {f"in_{i}": LavaPyType(PyInPort.VEC_DENSE, float) for i in range(n_in)}
        ports |= {f"out_{j}": LavaPyType(PyOutPort.VEC_DENSE, float) for j in range(n_out)}
        annotations = {k: (PyInPort if k.startswith("in_") else PyOutPort) for k in ports}
        fused = type(f"PyFused{name}Model", (_PyFusedBlockModel,), {**ports, "__annotations__": annotations, "__module__": __name__})
        implements(proc=proc_cls, protocol=LoihiProtocol)(sub)
        _model(proc_cls)(fused)
        globals().update({proc_cls.__name__: proc_cls, sub.__name__: sub, fused.__name__: fused})  # where lava looks
        _BLOCKS[key] = proc_cls
    return _BLOCKS[key]
