"""The Lava counterparts of RWKV-7's kinds of more than one input (`eventllm.process.rwkv7`): the WKV-7 state with
its delta rule, the current token's bonus and the value residual's lerp. Its element-wise and per-head one-input
kinds (tanh, decay, group norm, per-head L2 norm) and the scaled key are operations of `processes.Unary` and
`processes.Binary`; its token shifts are `processes.shift_class` of their ports.

The timing is that of `eventllm.process.lava.processes`: a process computes from whatever its in-ports show at
every step of a token's window and takes its new state (and counts its events) only at the last one. Float64, as
the other floating-point models here. This module runs under Python 3.10 with lava-nc, without torch.
"""

from __future__ import annotations

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.lava.processes import Counted, _CountedModel, _model

try:
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, OutPort
    from lava.magma.core.process.variable import Var
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"the Lava bridge needs lava-nc ({e}); use .venv-lava/bin/python") from None

WKV7_INPUTS = ("r", "w", "k", "v", "kappa", "a")  # our WKV7's in-ports, in its order (the events are counted so)


class WKV7State(Counted):
    """Per head h: S_h ← S_h·diag(w) − (S_h·κ)(κ ⊙ a)ᵀ + v kᵀ, out y_h = S_h·r; state `state` [H, N values, N keys]."""

    def __init__(self, *, n_head: int, n: int, hold: int, **kw):
        super().__init__(n_in=len(WKV7_INPUTS), n_out=1, hold=hold, **kw)
        for port in WKV7_INPUTS:
            setattr(self, port, InPort(shape=(n,)))
        self.out = OutPort(shape=(n,))
        self.state = Var(shape=(n_head, n // n_head, n // n_head), init=0)


class HeadBonus(Counted):
    """The current token's own contribution: per head (Σ r ⊙ k ⊙ r_k) · v (in-ports r, k, v)."""

    def __init__(self, *, n_head: int, r_k, hold: int, **kw):
        n = len(r_k)
        super().__init__(n_in=3, n_out=1, hold=hold, n_head=int(n_head), **kw)
        self.r = InPort(shape=(n,))
        self.k = InPort(shape=(n,))
        self.v = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))
        self.r_k = Var(shape=(n,), init=r_k)


class Lerp(Counted):
    """a + (b − a) ⊙ t: the value residual, v + (v_first − v) ⊙ gate."""

    def __init__(self, *, n: int, hold: int, **kw):
        super().__init__(n_in=3, n_out=1, hold=hold, **kw)
        self.a = InPort(shape=(n,))
        self.b = InPort(shape=(n,))
        self.t = InPort(shape=(n,))
        self.out = OutPort(shape=(n,))


@_model(WKV7State)
class PyWKV7StateModel(_CountedModel):
    r: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    w: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    k: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    kappa: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    state: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        ins = [getattr(self, port).recv() for port in WKV7_INPUTS]
        S = self.state
        r, w, k, v, kappa, a = (x.reshape(S.shape[0], -1) for x in ins)
        # the new state from the one of the token before; kept only at the window's last step
        new = S * w[:, None, :] - np.einsum("hij,hj->hi", S, kappa)[:, :, None] * (kappa * a)[:, None, :]
        new += v[:, :, None] * k[:, None, :]
        y = np.einsum("hij,hj->hi", new, r).reshape(-1)
        self.out.send(y)
        self.tally(ins, [y])
        if self.commits():
            self.state = new


@_model(HeadBonus)
class PyHeadBonusModel(_CountedModel):
    r: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    k: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    r_k: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        r, k, v = self.r.recv(), self.k.recv(), self.v.recv()
        n_head = self.proc_params["n_head"]
        s = (r * k * self.r_k).reshape(n_head, -1).sum(-1, keepdims=True)
        y = (s * v.reshape(n_head, -1)).reshape(-1)
        self.out.send(y)
        self.tally([r, k, v], [y])


@_model(Lerp)
class PyLerpModel(_CountedModel):
    a: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    b: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    t: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self):
        a, b, t = self.a.recv(), self.b.recv(), self.t.recv()
        y = a + (b - a) * t
        self.out.send(y)
        self.tally([a, b, t], [y])


# --- our processes → these (the names a process model gives in its `lava`) --------------------------------------
def _make_wkv7(p, hold):
    if tuple(p.in_ports) != WKV7_INPUTS:
        raise GraphError(f"{p.name}: in-ports {tuple(p.in_ports)}, the Lava WKV-7 takes {WKV7_INPUTS}")
    return WKV7State(n_head=p.attrs["n_head"], n=p.attrs["n"], hold=hold, name=p.name)


def _make_bonus(p, hold):
    return HeadBonus(n_head=p.attrs["n_head"], r_k=np.asarray(p.vars["r_k"].value, dtype=np.float64), hold=hold, name=p.name)


def _make_lerp(p, hold):
    return Lerp(n=p.attrs["n"], hold=hold, name=p.name)


COUNTERPARTS = {"WKV7": _make_wkv7, "HeadBonus": _make_bonus, "Lerp": _make_lerp}
