# SENECA energy and latency per token of the default model, three θ: the shipped (the paper's search), the greedy
# allocation (best training-free) and session 32's fine-tuned model (T = the bf16 model brought back, sha256 446f158c…).
# Event rates for the graph from 4,096 valid tokens; simulated over the first 4,096 test tokens with the trace engine,
# against θ = 0 with every entry sent (dense) and with zeros skipped (natural). This 2-core CPU. The simulation JSON is
# kept xz-compressed (read it with `xz -dc`): the xz line was added after the run, on the files it had written.
#   bash docs/runs/h200_s32/energy_cpu.sh T/model.safetensors
set -eu
E=${E:-.venv/bin/eventllm}; D=../shared/data/pg-books; W=$(mktemp -d)
run() {  # name model thresholds
  $E build --model "$2" --thresholds "$3" --data $D --split valid --tokens 4096 -o $W/$1 --force
  $E map $W/$1 --topology seneca -o $W/$1/mapping.json --no-heatmap
  $E simulate $W/$1 --mapping $W/$1/mapping.json --data $D --split test --max-tokens 4096 --compare-dense -q \
    --json docs/runs/h200_s32/energy_$1_cpu.json
}
run shipped zoo:rwkv4-small eventllm/zoo/rwkv4-small/thresholds.json
run greedy zoo:rwkv4-small docs/runs/thr_rwkv4_small_h200_greedy.json
run finetuned "$1" docs/runs/h200_s32/t.json
rm -rf $W
xz -9f docs/runs/h200_s32/energy_{shipped,greedy,finetuned}_cpu.json  # 2.1 MB each as JSON (every core's counters)
