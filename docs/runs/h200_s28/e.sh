# H200 call E (session 28, a fresh lease; as session 27's e.sh): the corpus onto the device's disk and tokenised as fine-tuning reads it
set -eu
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
mkdir -p /tmp/keep && rm -rf /tmp/keep/pg-books && cp -r .carry/pg-books /tmp/keep/pg-books
python - <<'PY'
from eventllm.tokenizer import HFTokenizer
from eventllm.data import cached_token_stream
tok = HFTokenizer('eventllm/zoo/rwkv4-small/tokenizer.json')
for split in ('train', 'valid'):
    print(split, len(cached_token_stream('/tmp/keep/pg-books', split, tok, None, False)))
PY
