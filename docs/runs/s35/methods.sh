# H200 (session 35): the training-free searches side by side with the three kinds of scores, at the 1% bound, one
# lease: calibrate (valid split) then evaluate on the test split (first 65,536 tokens, and the whole split while the
# call's time allows). usage: bash docs/runs/s35/methods.sh NAME MODEL DATA   (results: $OUT/NAME.tar.gz)
set -u
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache TQDM_MININTERVAL=60
name=$1 model=$2 data=$3
d=/tmp/keep/$name; mkdir -p $d; start=$(date +%s)
nvidia-smi --query-gpu=name --format=csv,noheader; python -c "import torch; print('torch', torch.__version__)"
for search in paper greedy; do for scores in magnitude wina gradient; do
  t=${search}_${scores}
  echo "== $name $t: eventllm calibrate --model $model --data DATA --max-ppl-increase 0.01 --search $search --scores $scores --device cuda"
  python -m eventllm calibrate --model $model --data $data --max-ppl-increase 0.01 --search $search --scores $scores \
    --device cuda -o $d/thr_$t.json -q > $d/cal_$t.log 2>&1; echo "rc $?"; tail -4 $d/cal_$t.log
  python -m eventllm evaluate --model $model --thresholds $d/thr_$t.json --data $data --split test --max-tokens 65536 \
    --device cuda --json $d/ev65k_$t.json -q > $d/ev65k_$t.log 2>&1; echo "test 65k rc $?"; grep -E "perplexity|MAC-weighted|mean over" $d/ev65k_$t.log
done; done
for t in greedy_magnitude greedy_gradient greedy_wina paper_gradient paper_magnitude paper_wina; do
  [ $(( $(date +%s) - start )) -lt 400 ] || break
  python -m eventllm evaluate --model $model --thresholds $d/thr_$t.json --data $data --split test --device cuda \
    --json $d/evall_$t.json -q > $d/evall_$t.log 2>&1; echo "== $name $t whole test split rc $? at $(( $(date +%s) - start )) s"
  grep -E "perplexity|MAC-weighted|mean over|tokens" $d/evall_$t.log | tail -4
done
tar czf $OUT/$name.tar.gz -C /tmp/keep $name; echo "done in $(( $(date +%s) - start )) s"
