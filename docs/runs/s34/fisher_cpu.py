"""Session 34 exploration: per-neuron scores from the loss's sensitivity to each input (a calibrated per-channel
variant of issue 13 item 2), against |x| (the paper's) and |x|·‖W[:, i]‖ (WINA), at the SAME per-site zero
fractions as a given thresholds file (so only the ranking inside each site differs).

Fisher score: g_i = sqrt(E[(∂CE/∂x_i)²]) on calibration tokens of the dense model (first-order Taylor: zeroing x_i
changes the loss by about x_i·∂CE/∂x_i); score |x_i|·g_i. "fisher^a": g_i^a (a = 0.5 halfway to magnitude).

python docs/runs/s34/fisher_cpu.py MODEL DATA THRESHOLDS SCALES GRAD_TOKENS TEST_TOKENS
"""
import sys, time, json, math, torch
import torch.nn.functional as F
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from eventllm.pipeline import load
from eventllm.data import read_texts, token_stream
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport

torch.set_num_threads(2)
model_spec, data, thr = sys.argv[1:4]
scales = [float(s) for s in sys.argv[4].split(',')]
ngrad, ntest = int(sys.argv[5]), int(sys.argv[6])
methods = (sys.argv[7] if len(sys.argv) > 7 else "magnitude,wina,fisher,fisher^0.5").split(',')
L = load(model_spec, thr)
m, tok = L.model, L.tokenizer
m.eval()
sites = m.threshold_sites()
base = m.get_thetas()
valid = token_stream(read_texts(data, 'valid'), tok)
cal = torch.tensor(valid[:ngrad].astype('int64'))
test = torch.tensor(token_stream(read_texts(data, 'test'), tok)[:ntest].astype('int64'))
t0 = time.time()

# 1. the gradient of the next-token cross-entropy at every site's input, dense model, chunks of 512 tokens
m.set_thetas(0.0)
m.set_scores("magnitude")
sq = {}
got = {}
def obs(site, x, y):
    x.retain_grad(); got[(site.layer, site.projection)] = x
for s in sites: s.observer = obs
state = None
for i in range(0, len(cal) - 1, 512):
    x = cal[i:i + 512 + 1]
    got.clear()
    logits, state = m(x[:-1][None], state)
    F.cross_entropy(logits[0].float(), x[1:], reduction='sum').backward()
    state = tuple(t.detach() for t in state) if isinstance(state, (tuple, list)) else state.detach()
    for k, v in got.items():
        g = v.grad.reshape(-1, v.shape[-1]).double()
        sq[k] = sq.get(k, 0) + g.square().sum(0)
    m.zero_grad(set_to_none=True)
for s in sites: s.observer = None
fisher = {k: (v / (len(cal) - 1)).sqrt().float() for k, v in sq.items()}
print(f"gradients on {len(cal)-1} tokens: {time.time()-t0:.1f} s", flush=True)

# 2. the per-site zero fractions of the file's θ × scale, on the calibration tokens
def fractions(thetas):
    m.set_scores("magnitude"); m.set_thetas(thetas)
    with torch.no_grad(), SparsityMeter(m) as meter:
        perplexity(m, cal)
    return meter.zero_fraction()

def set_method(name):
    m.set_scores("wina" if name == "wina" else "magnitude")
    if name.startswith("fisher"):
        a = float(name.split('^')[1]) if '^' in name else 1.0
        for s in sites:
            g = fisher[(s.layer, s.projection)]
            s.channel_scale = (g / g.mean()).pow(a).clamp_min(1e-12)

def matched_thetas(target):
    """θ per site whose zero fraction of the site's scores on the calibration tokens equals `target`."""
    m.set_thetas(0.0)
    vals = {}
    def o(site, x, y):
        vals.setdefault((site.layer, site.projection), []).append(site.scores(x.detach()).flatten())
    for s in sites: s.observer = o
    with torch.no_grad():
        perplexity(m, cal[:8193])
    for s in sites: s.observer = None
    out = {}
    for k, v in vals.items():
        v = torch.cat(v).sort().values
        q = target.get(k, 0.0)
        out[k] = float(v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]) if q > 0 else 0.0
    return out

m.set_thetas(0.0)
dense = perplexity(m, test)
print(f"dense test ppl {dense.ppl:.4f} on {dense.tokens} tokens", flush=True)
rows = []
for sc in scales:
    target = fractions({k: v * sc for k, v in base.items()})
    for name in methods:
        set_method(name)
        th = matched_thetas(target)
        m.set_thetas(th)
        with torch.no_grad(), SparsityMeter(m) as meter:
            r = perplexity(m, test)
        rep = SparsityReport.from_meter(m, meter)
        row = dict(scale=sc, method=name, mac_weighted=rep.mac_skipped(), site_mean=rep.average(),
                   ppl=r.ppl, ppl_increase=r.ppl / dense.ppl - 1, per_projection=rep.per_projection())
        rows.append(row)
        print(f"θ×{sc:<5g} {name:12s} MAC-weighted {row['mac_weighted']:.2%} site mean {row['site_mean']:.2%} "
              f"test ppl {r.ppl:.4f} ({row['ppl_increase']:+.2%})  [{time.time()-t0:.0f} s]", flush=True)
import os
if os.environ.get("OUT_JSON"):
    with open(os.environ["OUT_JSON"], "w") as f:
        json.dump(dict(model=model_spec, thresholds=thr, grad_tokens=len(cal) - 1, test_tokens=dense.tokens,
                       ppl_dense=dense.ppl, rows=rows), f, indent=1)
