# H200 call S1 (session 29, first lease; run with FT=550): stage 1, sparsity-aware fine-tuning of zoo:rwkv4-small from θ = 0
# (session 28 G1's command, with B, CE, CT, WA left at their defaults: 32, 100, 32768, 0.995); target 80%, 1% bound;
# the bf16 model was kept only on the device, and was lost with the lease (next time: bring it back in every call)
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep/s1
python -m eventllm calibrate --method finetune --model zoo:rwkv4-small --data /tmp/keep/pg-books --thresholds none \
  --ce-weight 1 --batch-size ${B:-32} --lr ${LR:-3e-4} --weight-average ${WA:-0.995} --check-every ${CE:-100} \
  --check-tokens ${CT:-32768} --max-ppl-increase 0.01 --target-sparsity 0.8 --max-seconds ${FT:-520} \
  --output-model /tmp/keep/s1/model.safetensors --output-dtype bfloat16 -o /tmp/keep/s1.json --device cuda -q \
  > /tmp/keep/s1.log 2>&1; echo "finetune rc $?"
tail -5 /tmp/keep/s1.log; cp /tmp/keep/s1.log /tmp/keep/s1.json $OUT/ 2>/dev/null; sha256sum /tmp/keep/s1/model.safetensors
