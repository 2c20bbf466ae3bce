import sys, time, json, torch
sys.path.insert(0, ".")
from eventllm.models.registry import load_model
from eventllm.data import read_texts, token_stream
from eventllm.sparsity.calibrate import calibrate
from eventllm.evaluate.language_model import evaluate_stream
dev = "cuda" if torch.cuda.is_available() else "cpu"
out = {}
for name in ("rwkv4-tiny", "opt-tiny"):
    lm = load_model(f"zoo:{name}"); m = lm.model.to(dev)
    ids = token_stream(read_texts("../shared/data/gutenberg", "valid"), lm.tokenizer).tolist()
    test = token_stream(read_texts("../shared/data/gutenberg", "test"), lm.tokenizer).tolist()
    t = time.time(); r = calibrate(m, ids, max_ppl_increase=0.01, refine=True, progress=False); dt = time.time() - t
    ev = evaluate_stream(m, test, progress=False)
    out[name] = {"seconds": dt, "check_sparsity": r.sparsity, "test_ppl_increase": ev["ppl_increase"], "test_sparsity": ev["sparsity"]["thresholded"],
                 "thetas": {f"{k[0]}:{k[1]}": v for k, v in r.thetas.items()}}
    print(name, round(dt, 1), "s; check sparsity", round(r.sparsity, 4), "; test", round(100 * ev["ppl_increase"], 3), "%", round(ev["sparsity"]["thresholded"], 4), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
