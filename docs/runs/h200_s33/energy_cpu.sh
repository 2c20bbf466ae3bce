# SENECA energy and latency per token of session 33's fine-tuned model (T = the bf16 model brought back, sha256 bb08b34d…),
# measured as session 32's three (docs/runs/h200_s32/energy_cpu.sh): event rates for the graph from 4,096 valid tokens,
# simulated over the first 4,096 test tokens with the trace engine against θ = 0 with every entry sent (dense) and with
# zeros skipped (natural). This 2-core CPU. The simulation JSON is kept xz-compressed (read it with `xz -dc`).
#   bash docs/runs/h200_s33/energy_cpu.sh T/model.safetensors
set -eu
E=${E:-.venv/bin/eventllm}; D=../shared/data/pg-books; W=$(mktemp -d)
$E build --model "$1" --thresholds docs/runs/h200_s33/t.json --data $D --split valid --tokens 4096 -o $W/g --force
$E map $W/g --topology seneca -o $W/g/mapping.json --no-heatmap
$E simulate $W/g --mapping $W/g/mapping.json --data $D --split test --max-tokens 4096 --compare-dense -q \
  --json docs/runs/h200_s33/energy_finetuned_cpu.json
rm -rf $W
xz -9f docs/runs/h200_s33/energy_finetuned_cpu.json
