"""What a process *is*, in Lava's terms: named `Var`s and typed ports, wired with `out.connect(inp)`.

How a process *runs* lives elsewhere (`eventllm.process.models`), so that the same graph runs in our
executor, in the simulator and on lava-nc.

>>> import numpy as np
>>> from eventllm.process.library import Threshold, Dense
>>> t = Threshold("t", n=3, theta=0.1)
>>> d = Dense("d", weights=np.ones((2, 3), dtype=np.float32))
>>> t.out.connect(d.inp)
>>> [c.describe() for c in d.inp.sources]
['t.out -> d.inp']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eventllm.errors import GraphError

# What a Var holds: fixed synaptic weights, other fixed parameters (biases, decays, θ …), or state that
# changes from token to token and persists across tokens.
ROLES = ("weight", "param", "state")

# Every Process subclass that names a `kind`, by kind: filled as the classes are defined (a saved graph names
# its processes' kinds, and loading looks them up here).
KINDS: dict[str, type["Process"]] = {}


@dataclass
class Var:
    """A named array of a process. `role` is one of ROLES."""

    name: str
    value: np.ndarray
    role: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def nbytes(self) -> int:
        return int(self.value.nbytes)

    @property
    def words(self) -> int:
        """Memory words of the hardware's word width per element: 2 for the values a process keeps in float64 (a
        delta site's x̂, a delta receiver's sums: 32-bit on the chip), 1 for everything else."""
        return 2 if self.value.dtype == np.float64 else 1


class Port:
    def __init__(self, process: "Process", name: str, size: int):
        self.process = process
        self.name = name
        self.size = int(size)

    @property
    def path(self) -> str:
        return f"{self.process.name}.{self.name}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, {self.size})"


@dataclass(frozen=True)
class Connection:
    src: "OutPort"
    dst: "InPort"

    def describe(self) -> str:
        return f"{self.src.path} -> {self.dst.path}"


class InPort(Port):
    """Receives events (graded spikes: index and value of each non-zero entry) of a vector of `size`."""

    def __init__(self, process: "Process", name: str, size: int):
        super().__init__(process, name, size)
        self.sources: list[Connection] = []


class OutPort(Port):
    """Sends the non-zero entries of a vector of `size` as events; may fan out to several in-ports."""

    def __init__(self, process: "Process", name: str, size: int):
        super().__init__(process, name, size)
        self.targets: list[Connection] = []

    def connect(self, inp: InPort) -> None:
        """Wire this out-port to `inp`; both must carry vectors of one size, and an in-port has one source."""
        if not isinstance(inp, InPort):
            raise GraphError(f"{self.path} can only connect to an InPort, got {inp!r}")
        if inp.size != self.size:
            raise GraphError(
                f"cannot connect {self.path} (size {self.size}) to {inp.path} (size {inp.size}): "
                "the sizes must be equal; check the layer widths of both processes"
            )
        if inp.sources:
            raise GraphError(f"{inp.path} is already fed by {inp.sources[0].src.path}; an in-port takes one source "
                             "(add the two with an Add process)")
        c = Connection(self, inp)
        self.targets.append(c)
        inp.sources.append(c)


class Process:
    """A node of the event-driven graph: Vars, in-ports and out-ports, plus scalar attributes.

    Subclasses declare themselves in `__init__` with `_var`, `_in` and `_out`, and keep the scalar settings
    they were built with in `self.attrs` (so a saved graph can rebuild them). `kind` names the behaviour
    (the process model) and `layer` the model layer the process belongs to (None outside the blocks).
    """

    kind: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            known = KINDS.get(cls.kind)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise GraphError(f"process kind {cls.kind!r} is defined twice ({known.__qualname__} and {cls.__qualname__}); "
                                 "give the new process another kind")
            KINDS[cls.kind] = cls

    def __init__(self, name: str, layer: int | None = None, **attrs):
        if not name or any(ch in name for ch in "/\\ "):
            raise GraphError(f"bad process name {name!r}: use a non-empty name without spaces or slashes")
        self.name = name
        self.layer = layer
        self.attrs: dict = dict(attrs)
        self.vars: dict[str, Var] = {}
        self.in_ports: dict[str, InPort] = {}
        self.out_ports: dict[str, OutPort] = {}

    # --- declaration helpers ----------------------------------------------------------------------------
    def _var(self, name: str, value, role: str, dtype=np.float32) -> np.ndarray:
        if role not in ROLES:
            raise GraphError(f"{self.name}.{name}: role must be one of {ROLES}, got {role!r}")
        if isinstance(value, np.ndarray) and value.ndim and not any(value.strides) and value.dtype == dtype:
            arr = value  # a broadcast scalar (shape-only graphs): kept as a view, never materialised
        else:
            arr = np.array(value, dtype=dtype, copy=True)
        if role != "state" and not np.all(np.isfinite(arr.flat[0] if not any(arr.strides) else arr)):
            raise GraphError(f"{self.name}.{name} contains NaN or infinite values; check the model weights")
        self.vars[name] = Var(name, arr, role)
        return arr

    def _in(self, name: str, size: int) -> InPort:
        port = InPort(self, name, size)
        self.in_ports[name] = port
        setattr(self, name, port)
        return port

    def _out(self, name: str, size: int) -> OutPort:
        port = OutPort(self, name, size)
        self.out_ports[name] = port
        setattr(self, name, port)
        return port

    # --- state ------------------------------------------------------------------------------------------
    def initial_state(self) -> dict[str, np.ndarray]:
        """The value of every state Var at the start of a sequence (zeros unless a subclass says otherwise).
        The graph only describes: a running process model copies this and keeps its own state."""
        return {n: np.zeros_like(v.value) for n, v in self.vars.items() if v.role == "state"}

    # --- sizes ------------------------------------------------------------------------------------------
    def nbytes(self, role: str | None = None) -> int:
        return sum(v.nbytes for v in self.vars.values() if role is None or v.role == role)

    def n_parameters(self) -> int:
        return sum(v.value.size for v in self.vars.values() if v.role != "state")

    def __repr__(self) -> str:
        ins = ", ".join(f"{p.name}[{p.size}]" for p in self.in_ports.values())
        outs = ", ".join(f"{p.name}[{p.size}]" for p in self.out_ports.values())
        return f"{type(self).__name__}({self.name!r}, in: {ins or '-'}, out: {outs or '-'})"
