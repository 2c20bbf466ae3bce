"""Any process graph (or a part of it) → a network of lava-nc processes, run token by token on Loihi2SimCfg.

The translator reads the graph; there is no per-model wiring. Each of our processes becomes one Lava process:
its process model (`eventllm.process.models`) names the counterpart in `ProcessModel.lava` — lava's own
`Dense` (a `BiasedDense` hierarchical process where the projection has a bias, a `FixedPointDense` — lava's
Dense in fixed point — where integer weights take int8 events), or one of the processes of
`eventllm.process.lava.processes`. The processes of one model layer are wrapped in a hierarchical `Block`
process (a SubProcessModel builds and wires them at compile time), so the Lava network reads like the graph:
token input, ln0, L0 … Ln, head.

Timing. Lava's Dense delivers W·s(t−1) at step t (one step of synaptic delay), so a token cannot cross the
network in one step. Each token is held for `hold` steps (one more than the most Dense on any path); every
process with state takes its new state, and counts its events, at the last step of the window, where all of
its inputs show the current token. The values read at that step equal one-token-per-step execution up to
float rounding (float64 here, float32 in our executor).

Per token the host sets the token (or the injected vectors of a part), runs `hold` steps, and reads the
output with Var get; events are read from each process's counters (`counts_in`, `counts_out`).
"""

from __future__ import annotations

import numpy as np

from eventllm.errors import GraphError
from eventllm.process.graph import ProcessGraph
from eventllm.process.lava import processes as lp
from eventllm.process.lava import rwkv7 as lava_rwkv7
from eventllm.process.models import model_class_for

try:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
except ImportError as e:  # pragma: no cover
    raise ImportError(f"the Lava network needs lava-nc ({e}); use .venv-lava/bin/python") from None


def input_delays(sub: ProcessGraph, fused: set[str] = frozenset()) -> dict[str, tuple[int, int]]:
    """(min, max) number of lava time steps between the network input and each process's inputs.

    Every Dense on the way adds one step (lava's Dense sends what it computed the step before); a Dense run
    inside a fused block (a name in `fused`) adds none.
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
                extra = 1 if model_class_for(src).synaptic and src.name not in fused else 0
                ins.append((lo + extra, hi + extra))
        delay[p.name] = (min(i[0] for i in ins), max(i[1] for i in ins))
    return delay


def _vars(p) -> dict[str, np.ndarray]:
    return {n: np.asarray(var.value, dtype=np.float64) for n, var in p.vars.items()}


def _make_dense(p, hold):
    v = _vars(p)
    if p.weight_bits < 16 and p.input_event_bits == 8:  # integers all the way: lava's fixed-point Dense
        return lp.FixedPointDense(weights=p.vars["weights"].value.astype(np.int64), scale=v["scale"], bias=v.get("bias"),
                                  hold=hold, name=p.name)
    if "scale" in v:  # integer weights with float events: the weights' values, in float (as the executor's product)
        v["weights"] = (p.vars["weights"].value.astype(np.float32) * p.vars["scale"].value[:, None]).astype(np.float64)
    if "bias" in v:
        return lp.BiasedDense(weights=v["weights"], bias=v["bias"], hold=hold, name=p.name)
    return lp.LavaDense(weights=v["weights"], num_message_bits=24, name=p.name)


def _make_unary(p, hold):
    v = _vars(p)
    if p.kind not in lp.UNARY:
        raise GraphError(f"{p.name}: {p.kind} is not one of the Unary operations {lp.UNARY}")
    return lp.Unary(op=p.kind, n=p.in_ports["inp"].size, hold=hold, weight=v.get("weight", v.get("k_k")), bias=v.get("bias"),
                    theta=v.get("theta", 0.0), eps=p.attrs.get("eps", 1e-5), event_bits=p.attrs.get("event_bits", 16),
                    n_head=p.attrs.get("n_head", 1), name=p.name)


def _make_binary(p, hold):
    if p.kind not in lp.BINARY:
        raise GraphError(f"{p.name}: {p.kind} is not one of the Binary operations {lp.BINARY}")
    return lp.Binary(op=p.kind, n=p.out_ports["out"].size, hold=hold, weight=_vars(p).get("k_a"), name=p.name)


def _make_shift(p, hold):
    mixes = {n: a for n, a in _vars(p).items() if n.startswith("mix_")}
    return lp.shift_class(tuple(p.out_ports))(mixes=mixes, hold=hold, name=p.name)


def _make_token_in(p, hold):
    v = _vars(p)
    if "scale" in v:  # an integer table: each row times its scale, in float32 as the executor's lookup
        v["weights"] = (p.vars["weights"].value.astype(np.float32) * p.vars["scale"].value[:, None]).astype(np.float64)
    return lp.TokenIn(table=v["weights"], positions=v.get("positions"), offset=p.attrs.get("offset", 0), hold=hold, name=p.name)


def _make_attention(p, hold):
    a = p.attrs
    return lp.CausalAttention(d=a["d"], n_head=a["n_head"], max_positions=a["max_positions"], scale=a["scale"], hold=hold,
                              name=p.name)


def _make_wkv(p, hold):
    v = _vars(p)
    return lp.WKVRecurrence(time_decay=v["time_decay"], time_first=v["time_first"], hold=hold, name=p.name)


# the counterparts a process model may name in its `lava` attribute
COUNTERPARTS = {"Dense": _make_dense, "Unary": _make_unary, "Binary": _make_binary, "ShiftMix": _make_shift,
                "TokenIn": _make_token_in, "Attention": _make_attention, "WKV": _make_wkv, **lava_rwkv7.COUNTERPARTS}


def counterpart(p) -> str:
    """The Lava counterpart named by `p`'s process model, or a GraphError naming what is missing."""
    name = model_class_for(p).lava
    if name not in COUNTERPARTS:
        raise GraphError(f"{p.name}: {type(p).__name__} ({p.kind}) has no Lava counterpart yet (its process model's `lava` is "
                         f"{name!r}; bridged: {', '.join(sorted(COUNTERPARTS))}); add one to eventllm.process.lava")
    return name


def _port(lava_proc, port):
    """The lava port standing for our `port` (lava's Dense names its ports s_in and a_out)."""
    if isinstance(lava_proc, lp.LavaDense):
        return lava_proc.s_in if port.name == "inp" else lava_proc.a_out
    return getattr(lava_proc, port.name)


class LavaNetwork:
    """The processes of `graph` (those whose names start with `prefix`) as a lava-nc network.

    >>> net = LavaNetwork(graph)                      # doctest: +SKIP
    >>> logits = net.step(token)["head.out"]          # one token: set, run `hold` steps, read
    >>> net.port_events()["L0.att.key.threshold.out"] # events sent so far
    >>> net.stop()

    With a prefix, the in-ports fed from outside the part get their vectors from `step(external=…)`.
    `blocks`: "hierarchical" (a Block per layer whose SubProcessModel holds one Lava process per process of
    ours), "fused" (a Block per layer run as one Lava process with our numpy process models: few OS processes,
    fast) or "flat" (every process at the top level).
    """

    BLOCK_MODES = ("hierarchical", "fused", "flat")

    def __init__(self, graph: ProcessGraph, prefix: str = "", probes: list[str] | tuple = (), blocks: str = "hierarchical"):
        if blocks not in self.BLOCK_MODES:
            raise GraphError(f"unknown block mode {blocks!r}; use one of {', '.join(self.BLOCK_MODES)}")
        self.mode = blocks
        procs = [p for p in graph if p.name.startswith(prefix)]
        if not procs:
            raise GraphError(f"no process name starts with {prefix!r}")
        if any(p.kind == "threshold" and "delta" in p.attrs for p in procs):
            raise GraphError("delta events are not bridged to Lava yet; run the graph without them (build it without "
                             "`delta`) or simulate it with the message engine")
        output = graph.output if graph.output.rsplit(".", 1)[0] in {p.name for p in procs} else None
        self.reads = list(dict.fromkeys([*([output] if output else []), *probes]))
        if not self.reads:
            raise GraphError(f"the part {prefix!r} does not hold the graph's output {graph.output}; name a probe to read (`probes`)")
        self.sub = ProcessGraph(procs, output=self.reads[0])
        self.group = {p.name: (f"L{p.layer}" if blocks != "flat" and p.layer is not None else None) for p in self.sub}
        fused = {name for name, b in self.group.items() if b and blocks == "fused"}
        for p in self.sub:
            if p.name not in fused:
                counterpart(p)
        self.delays = delays = input_delays(self.sub, fused)
        port_delay = {port.path: delays[p.name][1] + (1 if model_class_for(p).synaptic and p.name not in fused else 0)
                      for p in self.sub for port in p.out_ports.values()}
        self.hold = 1 + max([hi for _, hi in delays.values()] + [port_delay[path] for path in self.reads])
        self.leaves: dict[str, object] = {}  # our process name → its lava process (BiasedDense: the hierarchical one)
        self.started = False
        self.tokens = 0
        # float models everywhere, but lava's bit-accurate (fixed_pt) model for the integer Dense inside FixedPointDense
        self.cfg = Loihi2SimCfg(select_tag=lp.FLOAT, select_sub_proc_model=blocks == "hierarchical",
                                exception_proc_model_map={lp.IntegerDense: lp.PyIntegerDenseModel})
        self._build()

    # --- construction -----------------------------------------------------------------------------------------
    def _make(self, p):
        lava = COUNTERPARTS[counterpart(p)](p, self.hold)
        self.leaves[p.name] = lava
        return lava

    def _build(self) -> None:
        sub, group = self.sub, self.group
        members: dict[str, list] = {}
        for p in sub:
            if group[p.name]:
                members.setdefault(group[p.name], []).append(p)
        top = {p.name: self._make(p) for p in sub if not group[p.name]}
        # external inputs: the token (the embedding's own port) or injected vectors
        self.injects: dict[str, lp.Inject] = {}
        self.token_in = next((lava for name, lava in top.items() if isinstance(lava, lp.TokenIn)), None)
        feeds: dict[str, object] = {}  # out-port path (ours or outside) → the lava port that sends it at top level
        for port in sub.inputs():
            if port.name == "token":
                continue
            src = port.sources[0].src.path if port.sources else None
            if src is None:
                raise GraphError(f"in-port {port.path} is not connected")
            if src not in self.injects:
                self.injects[src] = lp.Inject(n=port.size, name="inject:" + src)
                feeds[src] = self.injects[src].out
        for name, lava in top.items():
            for port in sub[name].out_ports.values():
                feeds[port.path] = _port(lava, port)
        # blocks: their in-ports are the outside out-ports feeding a member; their out-ports the members' out-ports
        # that leave the block or are read
        self.blocks: dict[str, lp.Block] = {}
        block_in: dict[str, dict[str, int]] = {}
        inside = sub_paths(sub)
        for b, ms in members.items():
            names = {m.name for m in ms}
            ins: dict[str, int] = {}
            outs: dict[str, int] = {}
            for m in ms:
                for port in m.in_ports.values():
                    src = port.sources[0].src if port.sources else None
                    if src is not None and src.process.name not in names:
                        ins.setdefault(src.path, len(ins))
                for port in m.out_ports.values():
                    leaves = any(c.dst.process.name not in names for c in port.targets if c.dst.process.name in sub.processes)
                    if leaves or port.path in self.reads:
                        outs.setdefault(port.path, len(outs))
            block_in[b] = ins
            sizes_in = [sub.port(path).size if path in inside else self.injects[path].out.shape[0] for path in ins]
            sizes_out = [sub.port(path).size for path in outs]
            cls = lp.block_class(len(ins), len(outs))
            self.blocks[b] = cls(in_sizes=sizes_in, out_sizes=sizes_out, wire=self._wirer(ms, ins, outs), members=ms,
                                 ins=list(ins), outs=list(outs), hold=self.hold, name=b,
                                 commit_offset=max(self.delays[m.name][1] for m in ms))
            for path, j in outs.items():
                feeds[path] = getattr(self.blocks[b], f"out_{j}")
        # connections at the top level: from the feeding port to a top-level process or a block's in-port
        done: set[tuple[str, str]] = set()
        for p in sub:
            for port in p.in_ports.values():
                if port.name == "token":
                    continue
                src = port.sources[0].src.path
                b = group[p.name]
                if b is None:
                    feeds[src].connect(_port(top[p.name], port))
                elif src in block_in[b] and (src, b) not in done:
                    done.add((src, b))
                    feeds[src].connect(getattr(self.blocks[b], f"in_{block_in[b][src]}"))
        self.readouts = {}
        for path in self.reads:
            self.readouts[path] = lp.Readout(n=sub.port(path).size, hold=self.hold, name="read:" + path)
            feeds[path].connect(self.readouts[path].inp)
        self.anchor = self.token_in or next(iter(self.injects.values()), None) or next(iter(self.readouts.values()))

    def _wirer(self, ms, ins: dict[str, int], outs: dict[str, int]):
        """The function the Block's SubProcessModel calls at compile time to build and wire the layer."""
        def wire(block) -> dict:
            lava = {m.name: self._make(m) for m in ms}
            local: dict[str, object] = {}
            for m in ms:
                for port in m.out_ports.values():
                    local[port.path] = _port(lava[m.name], port)
            for m in ms:
                for port in m.in_ports.values():
                    src = port.sources[0].src.path
                    dst = _port(lava[m.name], port)
                    if src in ins:
                        getattr(block.in_ports, f"in_{ins[src]}").connect(dst)
                    else:
                        local[src].connect(dst)
            for path, j in outs.items():
                local[path].connect(getattr(block.out_ports, f"out_{j}"))
            return lava
        return wire

    # --- running ----------------------------------------------------------------------------------------------
    def step(self, token: int | None = None, external: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run one token (the token id, and/or the injected vectors of a part); returns the read out-ports."""
        if self.token_in is not None:
            if token is None:
                raise GraphError("this network starts at the token input: pass a token")
            self._set(self.token_in.token, np.array([float(token)]))
        for path, inj in self.injects.items():
            if external is None or path not in external:
                raise GraphError(f"{path} feeds the part from outside: pass its values in `external`")
            self._set(inj.value, np.asarray(external[path], dtype=np.float64))
        self.anchor.run(condition=RunSteps(num_steps=self.hold), run_cfg=self.cfg)
        self.started = True
        self.tokens += 1
        return {path: r.value.get().copy() for path, r in self.readouts.items()}

    def _set(self, var, value: np.ndarray) -> None:
        if self.started:
            var.set(value)
        else:  # before the first run compiles the network, a Var's initial value is set directly
            var.init = value

    def port_events(self, only: set[str] | None = None) -> dict[str, int]:
        """Events (non-zero entries) each out-port of the part sent (or of the processes named in `only`), summed
        over the tokens run, read from the Lava processes' counters; a lava Dense's events are those its first
        counting receiver took in."""
        counts_out = {}
        if self.mode == "fused":
            for b, block in self.blocks.items():
                if only is not None and not any(m.name in only for m in block.proc_params["members"]):
                    continue
                got = block.counts_out.get()
                i = 0
                for m in block.proc_params["members"]:
                    counts_out[m.name] = got[i : i + len(m.out_ports)]
                    i += len(m.out_ports)
        for name, lava in self.leaves.items():
            if only is not None and name not in only:
                continue
            if isinstance(lava, (lp.BiasedDense, lp.FixedPointDense)):
                counts_out[name] = lava.parts["out"].counts_out.get()
            elif not isinstance(lava, lp.LavaDense):
                counts_out[name] = lava.counts_out.get()
        events = {}
        for p in self.sub:
            if only is not None and p.name not in only:
                continue
            for i, port in enumerate(p.out_ports.values()):
                if p.name in counts_out:
                    events[port.path] = int(counts_out[p.name][i])
                else:
                    events[port.path] = self._received(port)
        return events

    def _received(self, port) -> int:
        """The non-zero entries a (plain lava) Dense's out-port delivered, counted where they arrived."""
        for c in port.targets:
            dst = self.leaves.get(c.dst.process.name)
            if dst is not None and not isinstance(dst, (lp.LavaDense, lp.BiasedDense, lp.FixedPointDense)):
                i = list(c.dst.process.in_ports).index(c.dst.name)
                return int(dst.counts_in.get()[i])
        if port.path in self.readouts:
            return int(self.readouts[port.path].counts_in.get()[0])
        raise GraphError(f"{port.path}: no receiver counts its events")

    def stop(self) -> None:
        if self.started:
            self.anchor.stop()
            self.started = False


def sub_paths(sub: ProcessGraph) -> set[str]:
    return {port.path for p in sub for port in p.out_ports.values()}
