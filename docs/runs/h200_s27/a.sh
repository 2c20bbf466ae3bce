# H200 call A of session 27: the corpus onto the device's disk, tokenised once; the compile cache warmed on the stage-2 shape
set -eu
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache TORCHINDUCTOR_CACHE_DIR=/tmp/keep/inductor
mkdir -p /tmp/keep && rm -rf /tmp/keep/pg-books /tmp/keep/data
cp -r .carry/pg-books /tmp/keep/pg-books && cp -r .carry/data /tmp/keep/data
python - <<'PY'
from eventllm.tokenizer import HFTokenizer
from eventllm.data import cached_token_stream
tok = HFTokenizer('eventllm/zoo/rwkv4-small/tokenizer.json')
for split in ('train', 'valid'):
    print(split, len(cached_token_stream('/tmp/keep/pg-books', split, tok, '/tmp/keep/s2/tokens', False, 0.5)))
PY
for d in s3 warm; do mkdir -p /tmp/keep/$d && cp -r /tmp/keep/s2/tokens /tmp/keep/$d/; done
sh docs/runs/h200_s27/prep.sh stage2-h200 x /tmp/keep/warm.toml
sed -i -e '/^init = /d' -e 's/^eval_every = 200/eval_every = 10/' /tmp/keep/warm.toml
time python -m eventllm train /tmp/keep/warm.toml -o /tmp/keep/warm --steps 30 -q 2>&1 | tail -4
nvidia-smi --query-gpu=name,memory.used --format=csv; python -c "import torch; print(torch.__version__)"; df -h /tmp | tail -1
