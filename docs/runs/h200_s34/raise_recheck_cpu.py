"""Session 34: the kept state's θ × f on the run's recheck text (262,144 pg-books valid tokens beside its check stream,
as `calibrate --method finetune --recheck-tokens 262144` takes them), against the dense zoo:rwkv4-small on the same
tokens: what the recheck would have made of a raise.

python docs/runs/h200_s34/raise_recheck_cpu.py T/model.safetensors docs/runs/h200_s34/t.json 1,1.02
"""
import math, sys, types, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from eventllm.cli import _recheck_stream
from eventllm.pipeline import load
from eventllm.data import cached_token_stream
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport

torch.set_num_threads(2)
model, thr, scales = sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(',')]
dense = load("zoo:rwkv4-small", "none")
valid = cached_token_stream("../shared/data/pg-books", "valid", dense.tokenizer, None, False)
fresh = _recheck_stream(valid, types.SimpleNamespace(check_tokens=32768, seed=0, recheck_tokens=262144, split="valid",
                                                     data="../shared/data/pg-books"))
with torch.no_grad():
    ref = perplexity(dense.model, fresh).nll
ft = load(model, thr).model
base = ft.get_thetas()
for f in scales:
    ft.set_thetas({k: v * f for k, v in base.items()})
    with torch.no_grad(), SparsityMeter(ft) as meter:
        nll = perplexity(ft, fresh).nll
    print(f"θ × {f:<5g} recheck ({fresh.numel() - 1:,} tokens) ppl {100 * (math.exp(nll - ref) - 1):+.2f}% vs dense, "
          f"MAC-weighted {100 * SparsityReport.from_meter(ft, meter).mac_skipped():.2f}%", flush=True)
