# H200 call F (session 35, same lease): a short fine-tuning run of zoo:rwkv4-small from θ = 0 (session 33's recipe, a
# FT-second budget) to see the end raise (bisection, shipped in session 34) on the device, then the whole test split.
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache TQDM_MININTERVAL=30
mkdir -p /tmp/keep/f
python -m eventllm calibrate --method finetune --model zoo:rwkv4-small --data /tmp/keep/pg-books --thresholds none \
  --ce-weight 1 --batch-size 32 --lr 3e-4 --weight-average 0.995 --max-ppl-increase 0.01 --target-sparsity 0.8 \
  --max-seconds ${FT:-380} --recheck-tokens 262144 \
  --output-model /tmp/keep/f/model.safetensors -o /tmp/keep/f.json --device cuda > /tmp/keep/f.log 2>&1; echo "finetune rc $?"
tr "\r" "\n" < /tmp/keep/f.log | grep -v "^fine-tuning" | tail -30; cp /tmp/keep/f.log /tmp/keep/f.json $OUT/
python -m eventllm evaluate --model /tmp/keep/f/model.safetensors --thresholds /tmp/keep/f.json --data /tmp/keep/pg-books \
  --split test --device cuda --json $OUT/f_eval_test.json -q > $OUT/f_eval_test.log 2>&1; echo "evaluate rc $?"
tail -5 $OUT/f_eval_test.log
