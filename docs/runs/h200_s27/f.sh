# H200 call F: sparsity-aware fine-tuning of zoo:rwkv4-small from θ = 0 in one run, target 80% MAC-weighted, 1% bound
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep/ft
python -m eventllm calibrate --method finetune --model zoo:rwkv4-small --data /tmp/keep/pg-books --thresholds none \
  --ce-weight 1 --batch-size 32 --lr 3e-4 --weight-average 0.995 --max-ppl-increase 0.01 --target-sparsity 0.8 \
  --max-seconds ${FT:-530} --output-model /tmp/keep/ft/model.safetensors --output-dtype bfloat16 \
  -o /tmp/keep/ft.json --device cuda -q > /tmp/keep/ft.log 2>&1; echo "finetune rc $?"
tail -6 /tmp/keep/ft.log; cp /tmp/keep/ft.log /tmp/keep/ft.json $OUT/ 2>/dev/null
split -b 15000000 -d /tmp/keep/ft/model.safetensors $OUT/model.part. && sha256sum /tmp/keep/ft/model.safetensors
