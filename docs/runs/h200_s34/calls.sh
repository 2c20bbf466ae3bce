# Session 34's H200 lease (nvidia-h200, torch 2.11): the device calls, in order, as made (1,613 s of the 1,800 s budget).
# 1. E, zoo weights out of the tree, .carry/pg-books carried (wall 27.4 s):
#      bash docs/runs/h200_s30/e.sh
# 2-4. T1, T2, T3: ONE fine-tuning run over three calls, the same command three times, issued together (only
#      zoo:rwkv4-small's weights in the tree), session 33's recipe; the package now raises θ at the end (then: the secant
#      search). T1 paused at step 3,700 after 551.6 s (wall 574.5 s, t1.log); T2 resumed from /tmp/keep/run.pt and paused
#      at step 7,528 after 1,102.0 s (wall 571.0 s, t2.log); T3 ran to the budget (wall 344.5 s, t3.log, t.json, the bf16
#      model in four parts, sha256 d2087ef3…):
#      FT=1400 PA=550 bash docs/runs/h200_s30/t.sh
# Afterwards on this 2-core CPU: raise_probe_cpu.{py,log} (the kept state's θ × f on its check stream) and the test split
# (eval_t_testall_cpu.*).
exec echo "a record of the calls, not a script to run: see the comments"
