# Session 33's H200 lease (nvidia-h200, torch 2.11): the device calls, in order, as made (1,627 s of the 1,800 s budget).
# 1. E, zoo weights out of the tree, .carry/pg-books carried (wall 26.7 s):
#      bash docs/runs/h200_s30/e.sh
# 2-4. T1, T2, T3: ONE fine-tuning run over three calls, the same command three times, issued together so that each call
#      came straight after the one before (only zoo:rwkv4-small's weights in the tree). Session 32's recipe with a 1,400 s
#      budget instead of 1,060 s. T1 paused at step 4,189 after 550.7 s (wall 566.9 s, t1.log); T2 resumed from
#      /tmp/keep/run.pt on the device's disk and paused at step 7,924 after 1,100.9 s (wall 567.0 s, t2.log); T3 ran to
#      the budget (wall 336.0 s, t3.log, t.json, the bf16 model in four parts, sha256 bb08b34d…):
#      FT=1400 PA=550 bash docs/runs/h200_s30/t.sh
# The test split was evaluated on this 2-core CPU afterwards (eval_t_testall_cpu.*), the lease having 172 s left.
exec echo "a record of the calls, not a script to run: see the comments"
