# H200 call G3 (session 28): G1's model fine-tuned again at lr 1e-4, held to the original zoo:rwkv4-small, target 80%;
# then the test split's first 65,536 tokens on the GPU (fine-tuned with its θ, and the original dense)
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep/ft3
python -m eventllm calibrate --method finetune --model /tmp/keep/ft1/model.safetensors --thresholds /tmp/keep/ft1.json \
  --teacher zoo:rwkv4-small --data /tmp/keep/pg-books --ce-weight 1 --batch-size 32 --lr ${LR:-1e-4} --safety ${SAFETY:-0.6} --weight-average 0.995 \
  --max-ppl-increase 0.01 --target-sparsity 0.8 --max-seconds ${FT:-480} --output-model /tmp/keep/ft3/model.safetensors \
  --output-dtype bfloat16 -o /tmp/keep/ft3.json --device cuda -q > /tmp/keep/ft3.log 2>&1; echo "finetune rc $?"
tail -5 /tmp/keep/ft3.log; cp /tmp/keep/ft3.log /tmp/keep/ft3.json $OUT/ 2>/dev/null
split -b 15000000 -d /tmp/keep/ft3/model.safetensors $OUT/ft3.part. && sha256sum /tmp/keep/ft3/model.safetensors
python -m eventllm evaluate --model /tmp/keep/ft3/model.safetensors --thresholds /tmp/keep/ft3.json --data /tmp/keep/pg-books \
  --split test --max-tokens 65536 --device cuda --json $OUT/eval_ft3_gpu.json 2>&1 | tail -4
