# H200 call E (session 35, same lease as calls A and B): the train split onto the device's disk beside valid/test,
# tokenised as fine-tuning reads it (the zoo weights out of the tree, .carry/pg-books carried)
set -eu
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
cp .carry/pg-books/train.txt.xz /tmp/keep/pg-books/
python - <<'PY'
from eventllm.tokenizer import HFTokenizer
from eventllm.data import cached_token_stream
tok = HFTokenizer('eventllm/zoo/rwkv4-small/tokenizer.json')
for split in ('train', 'valid'):
    print(split, len(cached_token_stream('/tmp/keep/pg-books', split, tok, None, False)))
PY
