# Device call E (a fresh lease): the pg-books corpus (carried in .carry/pg-books) onto the device's disk and tokenised
# as fine-tuning reads it, so that the fine-tuning calls need not carry it. Zoo weights out of the tree for this call.
set -eu
export PYTHONPATH=$PWD EVENTLLM_CACHE=/tmp/keep/cache
python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))'
mkdir -p /tmp/keep && rm -rf /tmp/keep/pg-books && cp -r .carry/pg-books /tmp/keep/pg-books
python3 - <<'PY'
from eventllm.tokenizer import HFTokenizer
from eventllm.data import cached_token_stream
tok = HFTokenizer('eventllm/zoo/rwkv4-small/tokenizer.json')
for split in ('train', 'valid', 'test'):
    print(split, len(cached_token_stream('/tmp/keep/pg-books', split, tok, None, False)))
PY
