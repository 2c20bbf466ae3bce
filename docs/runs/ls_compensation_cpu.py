"""Least-squares weight compensation after thresholding (closed form, no gradients): W' = W·E[x x̃ᵀ]·(E[x̃ x̃ᵀ] + λ)⁻¹ per projection,
so that W' x̃ ≈ W x on calibration tokens. Does it let θ go higher at equal perplexity? Session-27 exploration, not in the package."""
import os, sys, time, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from eventllm.pipeline import load
from eventllm.data import read_texts, token_stream
from eventllm.evaluate.perplexity import perplexity
from eventllm.models.threshold import ActivationThreshold
torch.set_num_threads(2)
model_spec = sys.argv[1]; data = sys.argv[2]; scale = float(sys.argv[3]); ncal = int(sys.argv[4]); lam = float(sys.argv[5])
L = load(model_spec, "shipped"); m, tok = L.model, L.tokenizer
m.eval()
sites = [s for s in m.modules() if isinstance(s, ActivationThreshold)]
for s in sites: s.theta *= scale
lin = m.projection_linears()
cal = torch.tensor(token_stream(read_texts(data, 'valid'), tok)[:ncal].astype('int64'))
test = torch.tensor(token_stream(read_texts(data, 'test'), tok)[:32768].astype('int64'))
def ppl():
    r = perplexity(m, test)
    return r.ppl
t0 = time.time(); base = ppl(); print(f'scale {scale}: thresholded ppl {base:.3f} ({time.time()-t0:.0f}s)', flush=True)
# dense ppl
saved = [s.theta for s in sites]
for s in sites: s.theta = 0.0
dense = ppl(); print(f'dense ppl {dense:.3f}  thresholded +{100*(base/dense-1):.2f}%', flush=True)
for s, th in zip(sites, saved): s.theta = th
# statistics, layer by layer (sequential: each layer's statistics are taken after earlier layers are compensated)
n_layer = len(m.blocks)
SEQ = os.environ.get('SEQ', '1') == '1'
for layer in (range(n_layer) if SEQ else [None]):
    stats = {}
    def obs(site, x, y):
        if layer is not None and site.layer != layer: return
        x2 = x.reshape(-1, x.shape[-1]).double(); y2 = y.reshape(-1, y.shape[-1]).double()
        a = stats.setdefault((site.layer, site.projection), [0, 0])
        a[0] = a[0] + y2.T @ y2; a[1] = a[1] + x2.T @ y2
    for s in sites: s.observer = obs
    with torch.no_grad():
        for i in range(0, len(cal) - 1, 1024):
            st = m.init_state(1)
            m(cal[i:i + 1024][None], st)
    for s in sites: s.observer = None
    for (ly, proj), (yy, xy) in stats.items():
        W = lin[(ly, proj)][0].weight  # (out, in)
        d = yy.shape[0]
        reg = lam * torch.diag(yy).mean() * torch.eye(d, dtype=yy.dtype)
        # W' = W · E[x yᵀ] · (E[y yᵀ] + λ)^-1 : minimises ‖W x − W' y‖² over the calibration tokens
        Wn = torch.linalg.solve((yy + reg).T, (W.double() @ xy).T).T
        # an input that never passes has a zero row in E[x̃ x̃ᵀ] and E[x x̃ᵀ]: the ridge gives it a zero column (never read)
        with torch.no_grad(): W.copy_(Wn.to(W.dtype))
comp = ppl(); print(f'compensated ppl {comp:.3f}  +{100*(comp/dense-1):.2f}%  (lambda {lam}, {ncal} cal tokens)', flush=True)
