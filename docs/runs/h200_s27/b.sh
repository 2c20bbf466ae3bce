# H200 call B: stage 2 (examples/zoo/rwkv4-small-stage2-h200.toml) from the shipped weights, then LAMBADA (first 1,000) on the GPU
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache TORCHINDUCTOR_CACHE_DIR=/tmp/keep/inductor
sh docs/runs/h200_s27/prep.sh stage2-h200 "$PWD/eventllm/zoo/rwkv4-small/model.safetensors" /tmp/keep/s2.toml
timeout 560 python -m eventllm train /tmp/keep/s2.toml -o /tmp/keep/s2 --max-seconds ${S2:-530} -q > $OUT/s2_train.log 2>&1; echo "train rc $?"
tail -3 $OUT/s2_train.log; cp /tmp/keep/s2/train_log.json $OUT/s2_train_log.json
python -m eventllm evaluate --model /tmp/keep/s2/model.safetensors --tasks lambada --task-data /tmp/keep/data --limit 1000 --device cuda -q --json $OUT/s2_lambada.json 2>&1 | tail -3
