"""OPT behind eventllm's interface equals transformers' OPTForCausalLM on the same weights."""

import torch
from transformers import OPTForCausalLM


def test_matches_transformers_opt(small_opt, tokens):
    plain = OPTForCausalLM(small_opt.config.to_hf()).eval()
    plain.load_state_dict(small_opt.hf.state_dict())
    with torch.no_grad():
        ours, _ = small_opt(tokens)
        theirs = plain(tokens).logits
    assert torch.equal(ours, theirs)


def test_cached_steps_equal_full_sequence(small_opt, tokens):
    with torch.no_grad():
        full, _ = small_opt(tokens[:1, :40])
        state = small_opt.init_state()
        steps = []
        for t in range(40):
            logits, state = small_opt(tokens[:1, t : t + 1], state)
            steps.append(logits)
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-4
    assert state.position == 40


def test_position_limit_is_a_clear_error(small_opt):
    import pytest

    from eventllm.errors import ConfigError

    state = small_opt.init_state()
    with pytest.raises(ConfigError, match="128 positions"):
        small_opt(torch.zeros(1, 129, dtype=torch.long), state)
