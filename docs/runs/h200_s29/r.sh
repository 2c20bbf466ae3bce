# H200 call R (session 29, second lease: the first lease was lost between calls with S1's model on its disk): S1's
# one-run command again, with the end state re-checked on 262,144 more valid tokens beside the check stream
# (--recheck-tokens; θ scaled down until within SAFETY 0.9 × 1% there); the bf16 model brought back in parts
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep/r
python -m eventllm calibrate --method finetune --model zoo:rwkv4-small --data /tmp/keep/pg-books --thresholds none \
  --ce-weight 1 --batch-size 32 --lr 3e-4 --weight-average 0.995 --max-ppl-increase 0.01 --target-sparsity 0.8 \
  --max-seconds ${FT:-490} --recheck-tokens ${RT:-262144} --output-model /tmp/keep/r/model.safetensors \
  --output-dtype bfloat16 -o /tmp/keep/r.json --device cuda -q > /tmp/keep/r.log 2>&1; echo "finetune rc $?"
tail -6 /tmp/keep/r.log; cp /tmp/keep/r.log /tmp/keep/r.json $OUT/ 2>/dev/null
split -b 15000000 -d /tmp/keep/r/model.safetensors $OUT/r.part. && sha256sum /tmp/keep/r/model.safetensors
