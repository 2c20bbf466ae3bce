# Device calls T1..T3 (one lease, after e.sh): ONE fine-tuning run of zoo:rwkv4-small-sparse by its recipe
# (examples/zoo/rwkv4-small-sparse.toml) over several calls; the run state waits in /tmp/keep/run.pt on the device's
# disk between them. The call that ends makes the zoo folder at bf16 and at int8 weights + int8 events
# (examples/zoo/ship_sparse.py), evaluates each on the whole pg-books test split against the dense model, and brings
# back both models in parts (split -b 15000000) with their thresholds, evaluations and the log (r.tar).
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache TQDM_MININTERVAL=10
mkdir -p /tmp/keep/t
python3 -m eventllm calibrate --config examples/zoo/rwkv4-small-sparse.toml --data /tmp/keep/pg-books \
  --max-seconds ${FT:-1300} --pause-after ${PA:-540} --checkpoint /tmp/keep/run.pt \
  --output-model /tmp/keep/t/model.safetensors -o /tmp/keep/t.json > /tmp/keep/t.$(date +%s).log 2>&1; echo "finetune rc $?"
l=$(ls -t /tmp/keep/t.*.log | head -1); tr "\r" "\n" < $l | grep -v "^fine-tuning" | tail -25
if [ -f /tmp/keep/t/model.safetensors ]; then
  sha256sum /tmp/keep/t/model.safetensors
  for b in 16 8; do
    python3 examples/zoo/ship_sparse.py /tmp/keep/t/model.safetensors /tmp/keep/t.json --weight-bits $b --event-bits $b \
      --tokenizer eventllm/zoo/rwkv4-small/tokenizer.json -o /tmp/keep/s$b
    python3 -m eventllm evaluate --model /tmp/keep/s$b/model.safetensors --thresholds /tmp/keep/s$b/thresholds.json \
      --reference zoo:rwkv4-small --split test --device cuda -q --json /tmp/keep/s$b/eval_test.json 2>&1 | tail -5
    split -b 15000000 -d /tmp/keep/s$b/model.safetensors $OUT/m$b.; sha256sum /tmp/keep/s$b/model.safetensors
  done
  cp /tmp/keep/t.*.log /tmp/keep/t.json /tmp/keep/t/; tar cf $OUT/r.tar -C /tmp/keep t.json s16/thresholds.json s16/eval_test.json s8/thresholds.json s8/eval_test.json $(cd /tmp/keep && ls t.*.log)
else
  cp $l $OUT/
fi
