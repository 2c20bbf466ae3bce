"""Session 34: the kept state's θ × f on the run's recheck text (262,144 pg-books valid tokens beside its check stream,
as `calibrate --method finetune --recheck-tokens 262144` takes them), against the dense zoo:rwkv4-small on the same
tokens: what the recheck would have made of a raise.

python docs/runs/h200_s34/raise_recheck_cpu.py T/model.safetensors docs/runs/h200_s34/t.json 1,1.02
"""
import sys, types
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eventllm.cli import _recheck_stream
from raise_probe_cpu import scan

args = types.SimpleNamespace(check_tokens=32768, seed=0, recheck_tokens=262144, split="valid", data="../shared/data/pg-books")
scan(sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3].split(',')], lambda v: _recheck_stream(v, args),
     lambda ids: f"recheck ({ids.numel() - 1:,} tokens)")
