# H200 calls T1 and T2 (session 30, one lease): ONE fine-tuning run of zoo:rwkv4-small from θ = 0 over two device calls.
# Session 29's R command (S1/G1's recipe plus --recheck-tokens) with a 1,060 s budget counted over both calls: the first
# call pauses after 560 s with the whole run saved in /tmp/keep/run.pt, the same command again goes on from it to the
# end (recheck on 262,144 more valid tokens, bf16 model). Every call brings back its log; the one that ends brings the
# model back in parts (split -b 15000000).
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache TQDM_MININTERVAL=10
mkdir -p /tmp/keep/t
python -m eventllm calibrate --method finetune --model zoo:rwkv4-small --data /tmp/keep/pg-books --thresholds none \
  --ce-weight 1 --batch-size 32 --lr 3e-4 --weight-average 0.995 --max-ppl-increase 0.01 --target-sparsity 0.8 \
  --max-seconds ${FT:-1060} --pause-after ${PA:-560} --recheck-tokens 262144 --checkpoint /tmp/keep/run.pt \
  --output-model /tmp/keep/t/model.safetensors --output-dtype bfloat16 -o /tmp/keep/t.json --device cuda \
  > /tmp/keep/t.$(date +%s).log 2>&1; echo "finetune rc $?"
l=$(ls -t /tmp/keep/t.*.log | head -1); tr "\r" "\n" < $l | grep -v "^fine-tuning" | tail -40; cp $l $OUT/
ls -la /tmp/keep/run.pt 2>/dev/null
if [ -f /tmp/keep/t/model.safetensors ]; then
  cp /tmp/keep/t.json $OUT/; split -b 15000000 -d /tmp/keep/t/model.safetensors $OUT/t.part.; sha256sum /tmp/keep/t/model.safetensors
fi
