# Session 32's H200 lease (nvidia-h200, torch 2.11): the device calls, in order, as made (1,444 s of the 1,800 s budget).
# 1. E, zoo weights out of the tree, .carry/pg-books carried (wall 30.1 s):
#      bash docs/runs/h200_s30/e.sh
# 2-3. T1 and T2: ONE fine-tuning run over two calls, the same command twice, issued together so that the second call
#      came straight after the first (only zoo:rwkv4-small's weights in the tree). T1 paused at step 3,829 after 550.7 s
#      (wall 570.9 s, t1.log); T2 resumed from /tmp/keep/run.pt on the device's disk and ran to the 1,060 s budget
#      (wall 545.6 s, t2.log, t.json, the bf16 model in four parts, sha256 446f158c…):
#      FT=1060 PA=550 bash docs/runs/h200_s30/t.sh
# 4. The test split on the GPU (wall 83.3 s + 37.4 s): eval_t_test_gpu.json, eval_dense_test_gpu.json
#      python -m eventllm evaluate --model /tmp/keep/t/model.safetensors --thresholds /tmp/keep/t.json \
#        --data /tmp/keep/pg-books --split test --device cuda --json $OUT/eval_t_test_gpu.json
#      python -m eventllm evaluate --model zoo:rwkv4-small --data /tmp/keep/pg-books --split test --device cuda \
#        --json $OUT/eval_dense_test_gpu.json
exec echo "a record of the calls, not a script to run: see the comments"
