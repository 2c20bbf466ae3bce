"""`eventllm info`: versions and the shipped models with their headline figures, or one model's card."""

from __future__ import annotations

from eventllm.cli.common import ALLOW_PARTIAL, load_model_args


def _zoo_row(name: str, card: dict) -> list[str]:
    """A zoo model's line: its figures rounded as a person reads them, from its card ("headline", else the training
    log's validation perplexity)."""
    h = card.get("headline", {})
    params = f"{card.get('parameters', 0) / 1e6:.1f}M"
    if "ppl" in h:
        ppl = f"{h['ppl']:.2f} ({h['data']})"
    elif "valid_ppl" in card:
        ppl = f"{card['valid_ppl']:.2f} (valid)"
    else:
        ppl = "—"
    if "energy_ratio" not in h:
        return [f"zoo:{name}", card.get("arch", "?"), params, ppl, "—", "—", "—", "—"]
    return [f"zoo:{name}", card.get("arch", "?"), params, ppl, h["configuration"].removeprefix("eventllm: "),
            f"{100 * h['sparsity_mac_weighted']:.0f}%", f"{h['energy_ratio']:.1f}x", f"{h['latency_ratio']:.1f}x"]


def cmd_info(args) -> int:
    import platform

    from eventllm.models.registry import zoo_card, zoo_names
    from eventllm.report import format_table

    if not args.model and args.thresholds:
        from eventllm.errors import ConfigError

        raise ConfigError(f"--thresholds {args.thresholds} is applied to a model: add --model (the one it was calibrated for)")
    if not args.model:
        import torch

        print(f"eventllm {__import__('eventllm').__version__}  (Python {platform.python_version()}, torch {torch.__version__})")
        rows = [_zoo_row(name, zoo_card(name) or {}) for name in zoo_names()]
        print(format_table(["model", "arch", "parameters", "perplexity (held out)", "best shipped configuration",
                            "sparsity", "energy ÷ dense", "latency ÷ dense"], rows, title="Shipped models"))
        print("sparsity: MAC-weighted; energy and latency per token on SENECA against the dense 16-bit model "
              "(`eventllm info --model zoo:NAME` gives a model's card; docs/RESULTS.md the commands)")
        return 0
    loaded = load_model_args(args)
    m = loaded.model
    n_params = sum(p.numel() for p in m.parameters())
    print(f"{loaded.name}: {m.arch}, {n_params:,} parameters, fingerprint {m.fingerprint()}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in m.config_dict().items()))
    print(f"tokenizer: {type(loaded.tokenizer).__name__}, {loaded.tokenizer.vocab_size} tokens")
    shapes = m.projection_shapes()
    thetas = m.get_thetas()
    rows = [[p, shapes[p][0], shapes[p][1], f"{max(thetas[(i, p)] for i in range(m.n_layer) if (i, p) in thetas):g}"]
            for p in m.PROJECTIONS]
    print(format_table(["projection", "in", "out", "max θ"], rows, title=f"Thresholded projections ({m.n_layer} layers)"))
    if loaded.card:
        c = loaded.card
        print(f"card: trained on {c['corpus']} ({c['split']}), {c['training_tokens']:,} tokens seen; "
              f"validation perplexity {c['valid_ppl']:.2f}"
              + (f" (unigram baseline {c['unigram_ppl']:.1f})" if c.get("unigram_ppl") is not None else ""))
        print(f"      training command: {c['training_command']}")
    return 0


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="versions and shipped models, or one model's architecture and card")
    i.add_argument("--model", help="zoo:NAME, a Hugging Face folder, a BlinkDL .pth or an eventllm .safetensors")
    i.add_argument("--thresholds", help="a thresholds JSON file to apply (none: θ = 0)")
    i.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL)
    i.set_defaults(func=cmd_info)
