# the TOML of a training stage with the device's paths: prep.sh NAME INIT OUT.toml (NAME: examples/zoo/rwkv4-small-NAME.toml)
sed -e "s#^corpus = .*#corpus = \"/tmp/keep/pg-books\"#" \
    -e "s#^tokenizer = .*#tokenizer = \"$PWD/eventllm/zoo/rwkv4-small/tokenizer.json\"#" \
    -e "s#^init = .*#init = \"$2\"#" examples/zoo/rwkv4-small-$1.toml > "$3"
