"""The RESULTS.md rows of the SANA-FE section, printed from simulate_sanafe.json (python table.py [LAYER])."""
import json
import sys
from pathlib import Path

s = json.loads((Path(__file__).parent / "simulate_sanafe.json").read_text())["sanafe"]
layer = sys.argv[1] if len(sys.argv) > 1 else "L0"
T = s["tokens"]
print("| projection | synaptic events ours = SANA-FE | hops ours = SANA-FE | messages ours / SANA-FE (ours per dest. core) "
      "| energy µJ/token ours / SANA-FE (Δ) | synapse Δ | µs/token ours / simple / detailed | SANA-FE loihi.yaml µJ/token |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in s["projections"]:
    if not r["name"].startswith(layer + "."):
        continue
    o, f, d, n, a = r["ours"], r["sanafe"], r["sanafe_detailed"], r["sanafe_loihi_yaml"], r["agreement"]
    eq = lambda k: f"{o[k]:,}" + (" =" if o[k] == f[k] else f" ≠ {f[k]:,}")  # noqa: E731
    print(f"| {r['name'][len(layer) + 1:]} | {eq('synaptic_events')} | {eq('hops')} | {o['messages']:,} / {f['messages']:,} "
          f"({o['messages_per_destination_core']:,}) | {o['energy_j'] / T * 1e6:.3f} / {f['energy_j'] / T * 1e6:.3f} "
          f"({a['energy_j']:+.3%}) | {a['energy_synapse']:+.0e} | {o['latency_s'] * 1e6:.3f} / {f['latency_s'] * 1e6:.3f} / "
          f"{d['latency_s'] * 1e6:.3f} | {n['energy_j'] / T * 1e6:.3f} |")
rows = s["projections"]
worst = max(abs(r["agreement"]["energy_j"]) for r in rows)
counts = all(r["agreement"][k] == 0 for r in rows for k in ("synaptic_events", "hops", "messages_per_destination_core"))
print(f"\nall {len(rows)} projections: counts equal {counts}; largest |energy Δ| {worst:.3%}; "
      f"largest |latency Δ| (simple) {max(abs(r['agreement']['latency_s']) for r in rows):.3%}; "
      f"largest |synaptic energy Δ| {max(abs(r['agreement']['energy_synapse']) for r in rows):.1e}")
m = s["model"]
print(f"whole graph µJ/token: ours {m['energy_per_token_j'] * 1e6:.3f}; projections ours {m['projections_energy_per_token_j'] * 1e6:.3f}; "
      f"(SANA-FE at loihi.yaml: {sum(r['sanafe_loihi_yaml']['energy_j'] for r in rows) / T * 1e6:.3f}); "
      f"with the projections at SANA-FE's loihi.yaml {m['with_sanafe_loihi_yaml_projections_energy_per_token_j'] * 1e6:.3f}")
big = max(rows, key=lambda r: abs(r["agreement"]["energy_j"]))
print(f"largest |energy Δ|: {big['name']}: {big['ours']['chip_crossings']:,} chip crossings, "
      f"{big['sanafe']['messages'] - big['ours']['messages']:,} messages to the source's own core")
det = max(rows, key=lambda r: r["sanafe_detailed"]["latency_s"] / r["sanafe"]["latency_s"])
print(f"largest detailed/simple: {det['name']}: {det['sanafe_detailed']['latency_s'] / det['sanafe']['latency_s']:.2f}x, "
      f"{det['sanafe']['messages'] / T:,.0f} messages and {det['sanafe']['hops'] / T:,.0f} hops per token")
by = {k: [sum(r[side]["energy_by_part_j"][k] for r in rows) / T * 1e6 for side in ("ours", "sanafe_loihi_yaml")] for k in
      ("synapse", "neuron", "network")}
print("projections by part, µJ/token ours / SANA-FE loihi.yaml: " + "; ".join(f"{k} {a:.3f} / {b:.3f}" for k, (a, b) in by.items()))
