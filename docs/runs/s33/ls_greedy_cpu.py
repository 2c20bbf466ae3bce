"""Session 33 exploration (not in the package): the greedy allocation's θ, then closed-form least-squares weight
compensation per projection, W' = argmin ‖W' x̃ − W t‖² + ridge, layer by layer (each layer's statistics after the
earlier layers are compensated). t = the projection's own unthresholded input (TARGET=local, session 27's method) or
the dense model's input at that site on the same tokens (TARGET=dense: also undoes the error coming from upstream).

python docs/runs/s33/ls_greedy_cpu.py MODEL DATA THRESHOLDS SCALES CAL_TOKENS LAMBDA TEST_TOKENS
"""
import os, sys, time, json, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from eventllm.pipeline import load
from eventllm.data import read_texts, token_stream
from eventllm.evaluate.perplexity import perplexity
from eventllm.models.threshold import ActivationThreshold

torch.set_num_threads(2)
model_spec, data, thr = sys.argv[1:4]
scales = [float(s) for s in sys.argv[4].split(',')]
ncal, lam, ntest = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
TARGET = os.environ.get('TARGET', 'local')
L = load(model_spec, thr)
m, tok = L.model, L.tokenizer
m.eval()
sites = [s for s in m.modules() if isinstance(s, ActivationThreshold)]
base_theta = [s.theta.clone() if torch.is_tensor(s.theta) else s.theta for s in sites]
W0 = {k: v[0].weight.detach().clone() for k, v in m.projection_linears().items()}
cal = torch.tensor(token_stream(read_texts(data, 'valid'), tok)[:ncal].astype('int64'))
test = torch.tensor(token_stream(read_texts(data, 'test'), tok)[:ntest].astype('int64'))


def set_scale(f):
    for s, th in zip(sites, base_theta):
        s.theta = th * f


def restore_weights():
    with torch.no_grad():
        for k, v in m.projection_linears().items():
            v[0].weight.copy_(W0[k])


def ppl():
    return perplexity(m, test).ppl


def sparsity_mac():
    # MAC-weighted zero fraction of the projection inputs on the first 8192 test tokens
    lin = m.projection_linears()
    z, n = {}, {}
    def obs(site, x, y):
        k = (site.layer, site.projection)
        macs = lin[k][0].weight.shape[0]
        z[k] = z.get(k, 0) + (y == 0).sum().item() * macs
        n[k] = n.get(k, 0) + y.numel() * macs
    for s in sites: s.observer = obs
    with torch.no_grad():
        st = m.init_state(1)
        for i in range(0, 8192, 1024):
            _, st = m(test[i:i + 1024][None], st)
    for s in sites: s.observer = None
    return sum(z.values()) / sum(n.values())


def record(layer, thresholded):
    """Per site of `layer`: the input before thresholding (x) and after (y), on the calibration tokens."""
    got = {}
    def obs(site, x, y):
        if site.layer != layer: return
        a = got.setdefault(site.projection, ([], []))
        a[0].append(x.reshape(-1, x.shape[-1]).double()); a[1].append(y.reshape(-1, y.shape[-1]).double())
    saved = [s.theta for s in sites]
    lin = m.projection_linears()
    current = {k: v[0].weight.detach().clone() for k, v in lin.items()}
    if not thresholded:   # the dense model: θ = 0 and the original weights
        for s in sites: s.theta = 0.0 * s.theta if torch.is_tensor(s.theta) else 0.0
        restore_weights()
    for s in sites: s.observer = obs
    with torch.no_grad():
        for i in range(0, len(cal) - 1, 1024):
            m(cal[i:i + 1024][None], m.init_state(1))
    for s in sites: s.observer = None
    for s, th in zip(sites, saved): s.theta = th
    with torch.no_grad():
        for k, v in lin.items(): v[0].weight.copy_(current[k])
    return {k: (torch.cat(a), torch.cat(b)) for k, (a, b) in got.items()}


def compensate():
    lin = m.projection_linears()
    for layer in range(len(m.blocks)):
        thr_rec = record(layer, True)
        dense_rec = record(layer, False) if TARGET == 'dense' else None
        for proj, (x, y) in thr_rec.items():
            t = dense_rec[proj][0] if dense_rec is not None else x
            W = lin[(layer, proj)][0].weight
            yy = y.T @ y; ty = t.T @ y
            reg = lam * torch.diag(yy).mean() * torch.eye(yy.shape[0], dtype=yy.dtype)
            Wn = torch.linalg.solve(yy + reg, (W.double() @ ty).T).T   # yy symmetric
            with torch.no_grad(): W.copy_(Wn.to(W.dtype))


set_scale(0.0)
t0 = time.time(); dense = ppl(); nat = sparsity_mac()
print(f'dense ppl {dense:.3f} natural MAC-weighted {100*nat:.1f}% ({time.time()-t0:.0f}s)', flush=True)
rows = []
for f in scales:
    restore_weights(); set_scale(f)
    t0 = time.time(); p = ppl(); sp = sparsity_mac()
    t1 = time.time(); compensate(); tc = time.time() - t1
    pc = ppl(); spc = sparsity_mac()
    r = dict(scale=f, mac_weighted=sp, ppl=p, increase=p / dense - 1, compensated_ppl=pc, compensated_increase=pc / dense - 1,
             compensated_mac_weighted=spc, compensation_s=tc)
    rows.append(r)
    print(f'θ×{f}: {100*sp:.1f}% MAC-weighted  thresholded {p:.3f} ({100*(p/dense-1):+.2f}%)  compensated {pc:.3f} '
          f'({100*(pc/dense-1):+.2f}%, {100*spc:.1f}%; {tc:.0f}s)  [{time.time()-t0:.0f}s]', flush=True)
print(json.dumps(dict(model=model_spec, thresholds=thr, target=TARGET, cal_tokens=ncal, lam=lam, test_tokens=ntest,
                      dense_ppl=dense, natural=nat, rows=rows)))
