# H200 call P (session 29): fine-tuning throughput by batch size, zoo:rwkv4-small, context 512, side by side in one run
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
python benchmarks/finetune_throughput.py --model zoo:rwkv4-small --data /tmp/keep/pg-books --batch-sizes ${BS:-32,64,128,256} \
  --steps 40 --warm 10 --device cuda -o $OUT/finetune_throughput_h200 2>&1 | tee $OUT/finetune_throughput_h200.log | tail -12
