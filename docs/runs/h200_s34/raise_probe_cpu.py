"""Session 34: why the end raise of the H200 run found no factor > 1 — the kept state's θ × f on the run's own check stream
(32,767 tokens of pg-books valid, `check_stream(valid, 32768, 0)`), against the dense zoo:rwkv4-small on the same tokens.
`scan` also serves raise_recheck_cpu.py (the run's recheck tokens).

python docs/runs/h200_s34/raise_probe_cpu.py T/model.safetensors docs/runs/h200_s34/t.json 1,1.01,1.02,1.05
"""
import math, sys, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
from eventllm.pipeline import load
from eventllm.data import cached_token_stream
from eventllm.evaluate.perplexity import perplexity
from eventllm.evaluate.sparsity_stats import SparsityMeter, SparsityReport
from eventllm.sparsity.calibrate import check_stream


def scan(model, thr, scales, stream_of, label):
    """Print, per scale f, the perplexity increase of the fine-tuned model at θ × f over the dense model and its
    MAC-weighted sparsity on the tokens `stream_of(valid ids)`."""
    torch.set_num_threads(2)
    dense = load("zoo:rwkv4-small", "none")
    ids = stream_of(cached_token_stream("../shared/data/pg-books", "valid", dense.tokenizer, None, False))
    with torch.no_grad():
        ref = perplexity(dense.model, ids).nll
    ft = load(model, thr).model
    base = ft.get_thetas()
    for f in scales:
        ft.set_thetas({k: v * f for k, v in base.items()})
        with torch.no_grad(), SparsityMeter(ft) as meter:
            nll = perplexity(ft, ids).nll
        print(f"θ × {f:<5g} {label(ids)} ppl {100 * (math.exp(nll - ref) - 1):+.2f}% vs dense, MAC-weighted "
              f"{100 * SparsityReport.from_meter(ft, meter).mac_skipped():.2f}%", flush=True)


if __name__ == "__main__":
    scan(sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(',')], lambda v: check_stream(v, 32768, 0),
         lambda ids: "check")
