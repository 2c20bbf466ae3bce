# Device calls T1, T2 (one lease): ONE fine-tuning run of zoo:rwkv4-small-sparse by its recipe
# (examples/zoo/rwkv4-small-sparse.toml) over several calls; the run state waits in /tmp/keep/run.pt on the device's
# disk between them. The call that ends brings back the bf16 model in parts (split -b 15000000) and its thresholds.
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache TQDM_MININTERVAL=10
mkdir -p /tmp/keep/t
python3 -m eventllm calibrate --config examples/zoo/rwkv4-small-sparse.toml --data /tmp/keep/pg-books \
  --max-seconds ${FT:-1300} --pause-after ${PA:-540} --checkpoint /tmp/keep/run.pt \
  --output-model /tmp/keep/t/model.safetensors -o /tmp/keep/t.json > /tmp/keep/t.$(date +%s).log 2>&1; echo "finetune rc $?"
l=$(ls -t /tmp/keep/t.*.log | head -1); tr "\r" "\n" < $l | grep -v "^fine-tuning" | tail -40; cp $l $OUT/
if [ -f /tmp/keep/t/model.safetensors ]; then
  cp /tmp/keep/t.json $OUT/; split -b 15000000 -d /tmp/keep/t/model.safetensors $OUT/t.part.; sha256sum /tmp/keep/t/model.safetensors
fi
