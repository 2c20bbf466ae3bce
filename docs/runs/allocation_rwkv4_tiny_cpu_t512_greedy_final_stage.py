"""Final stage after the greedy: common θ scale (calibrate's) vs bisection of the prefix length, both on a 32k check stream."""
# Inputs: docs/runs/allocation_rwkv4_tiny_cpu_t512_check8k.json (the greedy prices) and allocation_rwkv4_tiny_cpu_t512_greedy_thresholds.json
# (its θ, written by benchmarks/allocation.py --thresholds-dir), read here from /tmp/alloc/ where they were made.
import json, math, sys, time
import numpy as np, torch
from eventllm.pipeline import load
from eventllm.data import cached_token_stream
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.language_model import evaluate_stream
from eventllm.sparsity.calibrate import calibration_batch, _bisect
from eventllm.sparsity.allocate import site_levels, hull_steps, levels_after

t0 = time.perf_counter()
l = load("zoo:rwkv4-tiny"); m = l.model.eval()
valid = cached_token_stream("/work/shared/data/gutenberg", "valid", l.tokenizer).astype("int64").tolist()
test = cached_token_stream("/work/shared/data/gutenberg", "test", l.tokenizer).astype("int64").tolist()
batch = calibration_batch(valid, 512, 256, 0)
profiles = site_levels(m, batch[:, :-1], 10)
prices = json.load(open("/tmp/alloc/tiny_small.json"))["runs"]["greedy"]["prices"]
by = {p.site: p for p in profiles}
for h in prices:
    by[(h["layer"], h["projection"])].costs.append(h["kl"])
steps = hull_steps(profiles)
budget = math.log1p(0.01)
cum = np.cumsum([s.cost for s in steps])
sites = {(s.layer, s.projection): s for s in m.threshold_sites()}
def set_prefix(n, scale=1.0):
    m.set_thetas(0.0)
    for i, j in levels_after(steps, n).items():
        sites[profiles[i].site].theta = profiles[i].thetas[j] * scale
n_star = json.load(open("/tmp/alloc/zoo_rwkv4-tiny_greedy.json"))["meta"]
ids_t = torch.as_tensor(valid); n_check = 32768
start = int(np.random.default_rng(1).integers(0, ids_t.numel() - n_check + 1))
check = ids_t[start:start + n_check]
m.set_thetas(0.0); dense = perplexity(m, check).nll
def inc(): return math.exp(perplexity(m, check).nll - dense) - 1
# the batch-level prefix: the longest with summed... re-find by the joint KL is in the file's history? use the thetas file instead
thr = json.load(open("/tmp/alloc/zoo_rwkv4-tiny_greedy.json"))
scale0 = thr["meta"]["scale"]
# recover N*: the prefix whose θ equal the file's θ / scale
target = {(i, p): v / scale0 for i, layer in enumerate(thr["thresholds"]) for p, v in layer.items()}
N = next(n for n in range(len(steps) + 1) if all(abs((profiles[i].thetas[j]) - target[profiles[i].site]) < 1e-6 * max(1, target[profiles[i].site])
         for i, j in levels_after(steps, n).items()) and len(levels_after(steps, n)) == sum(1 for v in target.values() if v > 0))
print("N*", N, "of", len(steps), "summed cost", cum[N - 1], flush=True)
out = {}
# A: common θ scale on the 32k check stream (calibrate's rule)
def ok_scale(s):
    set_prefix(N, s); return inc() <= 0.9 * 0.01
lo, hi = (1.0, 1.5) if ok_scale(1.0) else (0.0, 1.0)
while lo >= 1.0 and ok_scale(hi) and hi < 64: lo, hi = hi, hi * 1.5
sA, _ = _bisect(ok_scale, lo, hi, steps=8)
set_prefix(N, sA); rA = evaluate_stream(m, test)
out["scale"] = {"scale": sA, "test_inc": rA["ppl_increase"], "mac": rA["sparsity"]["mac_weighted"]["thresholded"]}
print("A", out["scale"], time.perf_counter() - t0, flush=True)
# B: bisection of the prefix length on the same check stream
def ok_n(n):
    set_prefix(n); return inc() <= 0.9 * 0.01
lo, hi = 0, len(steps)
if ok_n(N):
    lo = N
else:
    hi = N
while hi - lo > 1:
    mid = (lo + hi) // 2
    if ok_n(mid): lo = mid
    else: hi = mid
set_prefix(lo); rB = evaluate_stream(m, test)
out["prefix"] = {"n": lo, "test_inc": rB["ppl_increase"], "mac": rB["sparsity"]["mac_weighted"]["thresholded"]}
print("B", out["prefix"], time.perf_counter() - t0, flush=True)
json.dump(out, open("/tmp/alloc/prefix_experiment.json", "w"), indent=1)
