# H200 call G1 (session 28): sparsity-aware fine-tuning of zoo:rwkv4-small from θ = 0, target 80% MAC-weighted, 1% bound,
# the ramp's pace halved after each check above the bound (new); bf16 model kept on the device for G2 and brought back
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep/ft1
python -m eventllm calibrate --method finetune --model zoo:rwkv4-small --data /tmp/keep/pg-books --thresholds none \
  --ce-weight 1 --batch-size 32 --lr 3e-4 --weight-average 0.995 --max-ppl-increase 0.01 --target-sparsity 0.8 \
  --max-seconds ${FT:-520} --output-model /tmp/keep/ft1/model.safetensors --output-dtype bfloat16 \
  -o /tmp/keep/ft1.json --device cuda -q > /tmp/keep/ft1.log 2>&1; echo "finetune rc $?"
tail -5 /tmp/keep/ft1.log; cp /tmp/keep/ft1.log /tmp/keep/ft1.json $OUT/ 2>/dev/null
split -b 15000000 -d /tmp/keep/ft1/model.safetensors $OUT/ft1.part. && sha256sum /tmp/keep/ft1/model.safetensors
