"""Tie a fine-tuning run's thresholds file to the bf16 copy of its model (the H200 run wrote float32 weights, 117 MB,
which cannot come back through the device's 64 MiB of files; they were rounded to bf16 there,
`save_eventllm(load_checkpoint(fp32), bf16, dtype=torch.bfloat16)`). θ are copied unchanged; the new file records the
float32 model's fingerprint in meta. Every figure of the bf16 model is then measured on it (`eventllm evaluate`).

    python docs/runs/h200_s26/rebind_bf16.py FT_BF16.safetensors THR_FP32.json OUT.json
"""
import json
import sys

from eventllm.models.registry import load_model
from eventllm.sparsity.thresholds import read_thresholds, save_thresholds


def main(model_path: str, thr_path: str, out: str) -> None:
    doc = read_thresholds(thr_path)
    model = load_model(model_path).model
    thetas = {(i, p): float(v) for i, layer in enumerate(doc["thresholds"]) for p, v in layer.items()}
    model.set_thetas(thetas)
    meta = dict(doc.get("meta", {}))
    meta["weights_rounded"] = {"to": "bfloat16", "from_model": doc["model"], "from_file": thr_path,
                               "note": "θ unchanged; the check figures above were measured on the float32 weights"}
    save_thresholds(model, out, model_path, meta)
    print(f"wrote {out}: {len(thetas)} θ, fingerprint {model.fingerprint()} (float32 run: {doc['model']['fingerprint']})")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
