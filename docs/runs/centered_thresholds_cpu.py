"""Exploration (issue 13): thresholds centred on each channel's median, T(x) = x if |x - c| > θ else c (the constant
W·c a bias), against plain T(x) = x if |x| > θ else 0, every site at the same sparsity (θ = the quantile of |x - c| or |x|
over 8,192 valid tokens), perplexity on the first 16,384 pg-books test tokens of zoo:rwkv4-small. Run on the 2-core CPU:
    python docs/runs/centered_thresholds_cpu.py 16384 0.4,0.5,0.6,0.7
"""
import sys, time, math, torch, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from eventllm.models.registry import load_model
from eventllm.data import cached_token_stream
from eventllm.models.threshold import ActivationThreshold
from eventllm.evaluate.perplexity import perplexity
torch.set_num_threads(2)
loaded = load_model("zoo:rwkv4-small"); m = loaded.model.eval()
val = cached_token_stream(str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared/data/pg-books"), "valid", loaded.tokenizer, progress=False)
tst = cached_token_stream(str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared/data/pg-books"), "test", loaded.tokenizer, progress=False)
NT = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
stats_ids = torch.as_tensor(val[:8192].astype(np.int64)); eval_ids = torch.as_tensor(tst[:NT].astype(np.int64))
sites = m.threshold_sites()
samples = {}
def obs(site, x, y):
    samples.setdefault((site.layer, site.projection), []).append(x.reshape(-1, x.shape[-1]).float())
for s in sites: s.observer = obs
with torch.no_grad(): m(stats_ids[None])
for s in sites: s.observer = None
X = {k: torch.cat(v) for k, v in samples.items()}
orig = ActivationThreshold._threshold
def thr(self, x):
    c = getattr(self, "center", None)
    if c is None or self.theta == 0.0: return orig(self, x)
    return torch.where((x - c).abs() > self.theta, x, c.to(x.dtype))
ActivationThreshold._threshold = thr
shapes = m.site_shapes()
macs = {k: shapes[k[1]][0] * shapes[k[1]][1] for k in X}
# sparsity meter on eval
cnt = {}
def meter(site, x, y):
    c = getattr(site, "center", None)
    z = (y == (c if c is not None else 0)).float().mean().item() if c is not None else (y == 0).float().mean().item()
    a = cnt.setdefault((site.layer, site.projection), [0.0, 0]); a[0] += z; a[1] += 1
def run(label):
    cnt.clear()
    for s in sites: s.observer = meter
    t = time.time(); r = perplexity(m, eval_ids, chunk=1024)
    for s in sites: s.observer = None
    fr = {k: v[0] / v[1] for k, v in cnt.items()}
    mw = sum(fr[k] * macs[k] for k in fr) / sum(macs.values()); mean = sum(fr.values()) / len(fr)
    print(f"{label:40s} ppl {r.ppl:.3f} MACw {mw:.3f} mean {mean:.3f} ({time.time()-t:.0f}s)", flush=True)
    return r.ppl
def setup(s_level, centered, kind="median"):
    for s in sites:
        k = (s.layer, s.projection); x = X[k]
        if centered:
            c = x.median(0).values if kind == "median" else x.mean(0)
            s.center = c
            d = (x - c).abs()
        else:
            s.center = None; d = x.abs()
        flat = d.flatten()
        idx = torch.randperm(flat.numel())[:2_000_000]
        s.theta = float(torch.quantile(flat[idx], s_level))
base = run("dense")
for lv in [float(a) for a in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["0.4", "0.5", "0.6", "0.7"])]:
    for cen in (False, True):
        setup(lv, cen)
        p = run(f"uniform {lv} centered={cen}")
        print(f"   +{(p/base-1)*100:.2f}%", flush=True)
