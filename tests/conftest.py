import os
import signal
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RWKV_JIT_ON", "0")  # the `rwkv` reference package: plain eager torch
# A suite started as a background job of a non-interactive shell (`make test &`, nohup) inherits SIGINT ignored,
# and so would every command the Ctrl-C tests start: give the children the normal disposition back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from eventllm.models import OPT, RWKV, OPTConfig, RWKVConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def small_rwkv() -> RWKV:
    """A 3-layer RWKV-4 with random weights in every part (no zero matrices)."""
    return RWKV(RWKVConfig(vocab_size=64, d_model=32, n_layer=3, d_ffn=96)).randomize(seed=1).eval()


@pytest.fixture
def small_opt() -> OPT:
    return OPT(OPTConfig(vocab_size=64, d_model=32, n_layer=2, n_head=4, d_ffn=64, max_positions=128)).randomize(seed=2).eval()


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 64, (2, 70), generator=torch.Generator().manual_seed(3))


@pytest.fixture
def stream() -> list[int]:
    """3000 token ids over 64, four in five from a repeating 40-token pattern (calibration and fine-tuning tests)."""
    # a repetitive stream, so that the random model's loss is not flat
    g = torch.Generator().manual_seed(7)
    base = torch.randint(0, 64, (40,), generator=g)
    noise = torch.randint(0, 64, (3000,), generator=g)
    return [int(base[i % 40]) if i % 5 else int(noise[i]) for i in range(3000)]


@pytest.fixture
def data_dir() -> Path:
    if not (DATA / "gutenberg").exists():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA
