# H200 call S2 (session 29): stage 2, S1's model fine-tuned again at a lower learning rate, held to the original
# zoo:rwkv4-small; at the end θ re-checked on RT more valid tokens beside the check stream (--recheck-tokens, scaled down
# to within SAFETY × 1% there); then the whole test split on the GPU, fine-tuned with its θ and the original dense
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep/s2
python -m eventllm calibrate --method finetune --model /tmp/keep/s1/model.safetensors --thresholds /tmp/keep/s1.json \
  --teacher zoo:rwkv4-small --data /tmp/keep/pg-books --ce-weight 1 --batch-size ${B:-32} --lr ${LR:-1e-4} \
  --safety ${SAFETY:-0.8} --weight-average ${WA:-0.995} --check-every ${CE:-100} --check-tokens ${CT:-65536} \
  --recheck-tokens ${RT:-262144} --max-ppl-increase 0.01 --target-sparsity 0.8 --max-seconds ${FT:-470} \
  --output-model /tmp/keep/s2/model.safetensors --output-dtype bfloat16 -o /tmp/keep/s2.json --device cuda -q \
  > /tmp/keep/s2.log 2>&1; echo "finetune rc $?"
tail -6 /tmp/keep/s2.log; cp /tmp/keep/s2.log /tmp/keep/s2.json $OUT/ 2>/dev/null
split -b 15000000 -d /tmp/keep/s2/model.safetensors $OUT/s2.part. && sha256sum /tmp/keep/s2/model.safetensors
python -m eventllm evaluate --model /tmp/keep/s2/model.safetensors --thresholds /tmp/keep/s2.json --data /tmp/keep/pg-books \
  --split test --device cuda --json $OUT/eval_s2_testall_gpu.json 2>&1 | tail -3
[ -f /tmp/keep/dense_testall.json ] || python -m eventllm evaluate --model zoo:rwkv4-small --data /tmp/keep/pg-books \
  --split test --device cuda --json /tmp/keep/dense_testall.json 2>&1 | tail -3; cp /tmp/keep/dense_testall.json $OUT/eval_dense_testall_gpu.json
