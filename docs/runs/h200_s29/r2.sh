# H200 call R2 (session 29, second lease; run inline, this is its command): R's model fine-tuned again for 235 s at
# lr 1e-4, held to the original zoo:rwkv4-small, checks held within 0.8 × 1%, then re-checked on 262,144 more valid tokens
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache; mkdir -p /tmp/keep/r2
python -m eventllm calibrate --method finetune --model /tmp/keep/r/model.safetensors --thresholds /tmp/keep/r.json \
  --teacher zoo:rwkv4-small --data /tmp/keep/pg-books --ce-weight 1 --batch-size 32 --lr 1e-4 --safety 0.8 \
  --weight-average 0.995 --recheck-tokens 262144 --max-ppl-increase 0.01 --target-sparsity 0.8 --max-seconds 235 \
  --output-model /tmp/keep/r2/model.safetensors --output-dtype bfloat16 -o /tmp/keep/r2.json --device cuda -q \
  > /tmp/keep/r2.log 2>&1; echo "finetune rc $?"; tail -6 /tmp/keep/r2.log; cp /tmp/keep/r2.log /tmp/keep/r2.json $OUT/
split -b 15000000 -d /tmp/keep/r2/model.safetensors $OUT/r2.part. && sha256sum /tmp/keep/r2/model.safetensors
