"""OPT through Hugging Face transformers' `OPTForCausalLM`, with a threshold before every projection.

Thresholds (one θ each per decoder layer) sit on the inputs of
    attn.qkv  the LayerNorm output that q_proj, k_proj and v_proj share (one θ for the three),
    attn.out  the attention output that enters out_proj,
    ffn.fc1   the LayerNorm output that enters fc1,
    ffn.fc2   the ReLU output that enters fc2 (naturally sparse).
They are attached as forward pre-hooks, so the weights keep transformers' names and numerics exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import OPTConfig as HFOPTConfig
from transformers import OPTForCausalLM
from transformers.cache_utils import DynamicCache

from eventllm.errors import ConfigError
from eventllm.limits import check_memory
from eventllm.models.base import CausalLM
from eventllm.models.threshold import ActivationThreshold


@dataclass
class OPTConfig:
    vocab_size: int = 8000
    d_model: int = 384
    n_layer: int = 6
    n_head: int = 6
    d_ffn: int = 1536
    max_positions: int = 1024
    word_embed_proj_dim: int = 0  # 0: same as d_model
    do_layer_norm_before: bool = True
    activation: str = "relu"
    pad_token_id: int = 1
    bos_token_id: int = 2
    eos_token_id: int = 2

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layer", "n_head", "d_ffn", "max_positions", "word_embed_proj_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (name != "word_embed_proj_dim"):
                raise ConfigError(f"OPTConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise ConfigError(f"OPTConfig.d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not isinstance(self.activation, str):
            raise ConfigError(f"OPTConfig.activation must be a name such as 'relu', got {self.activation!r}")
        if self.word_embed_proj_dim <= 0:
            self.word_embed_proj_dim = self.d_model
        check_memory(4 * self.n_parameters(), f"an OPT of {self.n_layer} layers x {self.d_model} (vocabulary {self.vocab_size})",
                     "use a smaller config")

    def n_parameters(self) -> int:
        """Parameters of the model this config describes (counted before building it)."""
        d, w = self.d_model, self.word_embed_proj_dim
        return (self.vocab_size * w + (self.max_positions + 2) * d + (2 * w * d if w != d else 0)
                + self.n_layer * (4 * d * d + 2 * d * self.d_ffn + 10 * d))

    def to_hf(self) -> HFOPTConfig:
        return HFOPTConfig(
            vocab_size=self.vocab_size, hidden_size=self.d_model, num_hidden_layers=self.n_layer,
            num_attention_heads=self.n_head, ffn_dim=self.d_ffn, max_position_embeddings=self.max_positions,
            word_embed_proj_dim=self.word_embed_proj_dim, do_layer_norm_before=self.do_layer_norm_before,
            activation_function=self.activation, pad_token_id=self.pad_token_id, bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id, dropout=0.0, attention_dropout=0.0, layerdrop=0.0,
            tie_word_embeddings=True,
        )

    @classmethod
    def from_hf(cls, hf: dict) -> "OPTConfig":
        return cls(
            vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layer=hf["num_hidden_layers"],
            n_head=hf["num_attention_heads"], d_ffn=hf["ffn_dim"], max_positions=hf["max_position_embeddings"],
            word_embed_proj_dim=hf.get("word_embed_proj_dim") or hf["hidden_size"],
            do_layer_norm_before=hf.get("do_layer_norm_before", True),
            activation=hf.get("activation_function", "relu"), pad_token_id=hf.get("pad_token_id", 1),
            bos_token_id=hf.get("bos_token_id", 2), eos_token_id=hf.get("eos_token_id", 2),
        )


@dataclass
class OPTState:
    """Key/value cache of every layer and the number of tokens seen."""

    cache: DynamicCache
    position: int = 0


class OPT(CausalLM):
    """OPT language model; `forward(idx[B, T], state=None) -> (logits[B, T, vocab], state)`."""

    arch = "opt"
    recurrent = False
    PROJECTIONS = ("attn.qkv", "attn.out", "ffn.fc1", "ffn.fc2")

    hf_model_type = "opt"

    @classmethod
    def config_from_hf(cls, hf: dict) -> "OPTConfig":
        return OPTConfig.from_hf(hf)

    @classmethod
    def tensors_from_hf(cls, tensors):
        return {("model." + k if k.startswith("decoder.") else k): v for k, v in tensors.items()}

    def weights_module(self):
        return self.hf

    def to_hf(self):
        return self.hf

    def complete_tensors(self, tensors):
        tensors = dict(tensors)
        tensors.setdefault("lm_head.weight", tensors.get("model.decoder.embed_tokens.weight", torch.empty(0)))
        return tensors

    def set_dropout(self, p: float) -> None:
        self.hf.model.decoder.dropout = p
        for layer in self.hf.model.decoder.layers:
            layer.dropout = p

    def __init__(self, config: OPTConfig):
        super().__init__()
        self.config = config
        self.hf = OPTForCausalLM(config.to_hf()).eval()
        for i, layer in enumerate(self.hf.model.decoder.layers):
            attn = layer.self_attn
            layer.qkv_in = ActivationThreshold(i, "attn.qkv")
            layer.out_in = ActivationThreshold(i, "attn.out")
            layer.fc1_in = ActivationThreshold(i, "ffn.fc1")
            layer.fc2_in = ActivationThreshold(i, "ffn.fc2")
            attn.q_proj.register_forward_pre_hook(_hook(layer.qkv_in, observe=True))
            attn.k_proj.register_forward_pre_hook(_hook(layer.qkv_in, observe=False))
            attn.v_proj.register_forward_pre_hook(_hook(layer.qkv_in, observe=False))
            attn.out_proj.register_forward_pre_hook(_hook(layer.out_in, observe=True))
            layer.fc1.register_forward_pre_hook(_hook(layer.fc1_in, observe=True))
            layer.fc2.register_forward_pre_hook(_hook(layer.fc2_in, observe=True))

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        d, f = self.config.d_model, self.config.d_ffn
        return {"attn.qkv": (d, 3 * d), "attn.out": (d, d), "ffn.fc1": (d, f), "ffn.fc2": (f, d)}

    # the LM head shares the token embedding's matrix: quantising it would quantise the embedding too
    head_tied = True

    def projection_linears(self):
        out = {}
        for i, layer in enumerate(self.hf.model.decoder.layers):
            a = layer.self_attn
            out[(i, "attn.qkv")] = [a.q_proj, a.k_proj, a.v_proj]
            out[(i, "attn.out")] = [a.out_proj]
            out[(i, "ffn.fc1")] = [layer.fc1]
            out[(i, "ffn.fc2")] = [layer.fc2]
        out[(None, "head")] = [self.hf.lm_head]
        return out

    def init_state(self, batch: int = 1) -> OPTState:
        return OPTState(DynamicCache(), 0)

    def forward(self, idx: torch.Tensor, state: OPTState | None = None):
        if state is None:
            out = self.hf(input_ids=idx, use_cache=False)
            return out.logits, None
        end = state.position + idx.shape[1]
        if end > self.config.max_positions:
            raise ConfigError(
                f"OPT has {self.config.max_positions} positions; this call would reach position {end}. "
                "Start a new state (or shorten the prompt)."
            )
        out = self.hf(input_ids=idx, past_key_values=state.cache, use_cache=True)
        return out.logits, OPTState(out.past_key_values, end)

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        """The transformers-named weights (the tied lm_head is left out, as transformers saves it)."""
        return {k: v for k, v in self.hf.state_dict().items() if k != "lm_head.weight"}

    @torch.no_grad()
    def randomize(self, seed: int = 0, scale: float = 0.5) -> "OPT":
        g = torch.Generator().manual_seed(seed)
        for name, p in self.hf.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5, generator=g)
            elif name.endswith("bias"):
                p.uniform_(-0.2, 0.2, generator=g)
            else:
                p.normal_(0.0, scale / p.shape[-1] ** 0.5 if "proj" in name or "fc" in name else 1.0, generator=g)
        return self


def _hook(site: ActivationThreshold, observe: bool):
    def pre_hook(module, args):
        x = args[0]
        return (site(x) if observe else site.apply(x),) + tuple(args[1:])

    return pre_hook
