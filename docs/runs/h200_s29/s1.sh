# H200 call S1 (session 29): stage 1, sparsity-aware fine-tuning of zoo:rwkv4-small from θ = 0 (session 28's G1 at a
# larger batch: B windows of 512 per step, checks every CE steps on CT tokens, weight average WA); target 80%, 1% bound;
# the bf16 model stays on the device for stage 2
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep/s1
python -m eventllm calibrate --method finetune --model zoo:rwkv4-small --data /tmp/keep/pg-books --thresholds none \
  --ce-weight 1 --batch-size ${B:-32} --lr ${LR:-3e-4} --weight-average ${WA:-0.995} --check-every ${CE:-100} \
  --check-tokens ${CT:-32768} --max-ppl-increase 0.01 --target-sparsity 0.8 --max-seconds ${FT:-520} \
  --output-model /tmp/keep/s1/model.safetensors --output-dtype bfloat16 -o /tmp/keep/s1.json --device cuda -q \
  > /tmp/keep/s1.log 2>&1; echo "finetune rc $?"
tail -5 /tmp/keep/s1.log; cp /tmp/keep/s1.log /tmp/keep/s1.json $OUT/ 2>/dev/null; sha256sum /tmp/keep/s1/model.safetensors
