"""Where SANA-FE's `detailed` timing adds to `simple` for one projection, from its message trace (2-core CPU):
python detailed_timing.py MODEL PROJECTION TOKENS   (the model's shipped thresholds; a prompt cut to TOKENS; loihi mesh)."""
import sys

import numpy as np

from eventllm.masks import event_masks
from eventllm.pipeline import build, load, place
from sim import sanafe as sf
from sim.trace import TraceEngine

PROMPT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. "
          "However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is "
          "so well fixed in the minds of the surrounding families, that he is considered the rightful property of some one or "
          "other of their daughters.")
spec, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sanafe = sf.require_sanafe()
loaded = load(spec, "shipped")
ids = loaded.tokenizer.encode(PROMPT)[:n]
hw = place(build(loaded.model, spec, ids), "loihi")
(p,) = sf.projections(TraceEngine(hw.graph, hw.mapping, hw.costs), names=[name])
mask = np.concatenate([m[p.port] for _, m in event_masks(loaded.model, hw.graph, ids)]) if p.port.endswith("threshold.out") \
    else np.ones((len(ids), p.size), bool)
arch = sanafe.load_arch(str(sf.write_architecture(sf.architecture(hw.mapping.topology, hw.costs, [p]), "/tmp/detailed_arch.yaml")))
steps = {}
for timing in ("simple", "detailed"):
    chip = sanafe.SpikingChip(arch)
    chip.load(sf.network(sanafe, arch, hw.graph, p, mask))
    with sf._quiet():
        r = chip.sim(len(ids), timing_model=timing, perf_trace=True, message_trace=timing == "detailed")
    steps[timing] = np.array(r["perf_trace"]["sim_time"])
first_net, idle, blocked = [], [], []
for t, step in enumerate(r["message_trace"]):
    by = {}
    for m in step:
        if not m["placeholder"]:
            by.setdefault(m["dest_core_id"], []).append(m)
    last = max(by, key=lambda c: max(m["processed_timestamp"] for m in by[c]))  # the core that ends the step
    ms = by[last]
    first_net.append(ms[0]["network_delay"])
    idle.append(max(m["processed_timestamp"] for m in ms) - sum(m["processing_delay"] for m in ms))
    blocked.append(sum(m["blocking_delay"] for m in ms))
extra = steps["detailed"] - steps["simple"]
print(f"{spec} {name}, {len(ids)} tokens, {len(p.targets)} destination cores, loihi costs")
print(f"simple {steps['simple'].mean() * 1e6:.3f} µs/step, detailed {steps['detailed'].mean() * 1e6:.3f} µs/step: "
      f"+{extra.mean() * 1e9:.1f} ns/step")
print(f"the core that ends the step waits {np.mean(idle) * 1e9:.1f} ns/step for messages (max |difference from the extra "
      f"time| {np.max(np.abs(np.array(idle) - extra)) * 1e9:.2f} ns): {np.mean(first_net) * 1e9:.1f} ns for its first message "
      f"(hops and the route's congestion estimate), {np.mean(np.array(idle) - np.array(first_net)) * 1e9:.1f} ns of gaps between "
      f"later ones (one sender serves {len(p.targets)} cores; a link buffers 16 messages)")
print(f"blocking delay summed over its messages (queued, mostly hidden by processing): {np.mean(blocked) * 1e9:.1f} ns/step")
