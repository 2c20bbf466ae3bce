"""Session 34: why the end raise of the H200 run found no factor > 1 — the kept state's θ × f on the run's own check stream
(32,767 tokens of pg-books valid, `check_stream(valid, 32768, 0)`), against the dense zoo:rwkv4-small on the same tokens.

python docs/runs/h200_s34/raise_probe_cpu.py T/model.safetensors docs/runs/h200_s34/t.json 1,1.01,1.02,1.05
"""
import math, sys, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from eventllm.pipeline import load
from eventllm.data import cached_token_stream
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.sparsity.calibrate import check_stream

torch.set_num_threads(2)
model, thr, scales = sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(',')]
dense = load("zoo:rwkv4-small", "none")
check = check_stream(cached_token_stream("../shared/data/pg-books", "valid", dense.tokenizer, None, False), 32768, 0)
with torch.no_grad():
    ref = perplexity(dense.model, check).nll
ft = load(model, thr).model
base = ft.get_thetas()
for f in scales:
    ft.set_thetas({k: v * f for k, v in base.items()})
    with torch.no_grad(), SparsityMeter(ft) as meter:
        nll = perplexity(ft, check).nll
    print(f"θ × {f:<5g} check ppl {100 * (math.exp(nll - ref) - 1):+.2f}% vs dense, MAC-weighted "
          f"{100 * SparsityReport.from_meter(ft, meter).mac_skipped():.2f}%", flush=True)
