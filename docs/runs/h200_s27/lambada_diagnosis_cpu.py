"""Where zoo:rwkv4-small fails LAMBADA (first 300 passages, CPU): accuracy, first-token accuracy and top 5, how often the target
occurs earlier in the passage and is copied, the commonest first-token predictions."""
import json, sys, collections, torch, torch.nn.functional as F
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from eventllm.pipeline import load
L = load(sys.argv[1] if len(sys.argv) > 1 else 'zoo:rwkv4-small')
m, tok = L.model, L.tokenizer
m.eval()
rows = [json.loads(l) for l in open(__import__('pathlib').Path(__file__).resolve().parents[4] / 'shared/data/lambada/lambada_test.jsonl')][:300]
hit = first = top5 = incontext = hit_inctx = 0
preds = collections.Counter()
torch.set_num_threads(2)
with torch.no_grad():
    for o in rows:
        ctx, last = o['text'].rsplit(' ', 1)
        c = tok.encode(ctx); cont = tok.encode(ctx + ' ' + last)[len(c):]
        ids = c + cont
        logits, _ = m(torch.tensor([ids[:-1]]), m.init_state(1))
        lp = F.log_softmax(logits[0, -len(cont):].float(), -1)
        t = torch.tensor(cont)
        hit += bool((lp.argmax(-1) == t).all())
        first += int(lp[0].argmax() == t[0])
        top5 += int(t[0] in lp[0].topk(5).indices)
        ic = last in ctx
        incontext += ic
        hit_inctx += ic and bool((lp.argmax(-1) == t).all())
        preds[tok.decode([int(lp[0].argmax())])] += 1
n = len(rows)
print(f"acc {hit/n:.3f} first-token acc {first/n:.3f} top5 {top5/n:.3f} target in ctx {incontext/n:.3f} acc|in ctx {hit_inctx/max(1,incontext):.3f}")
print(preds.most_common(25))
