# The run behind docs/RESULTS.md's SANA-FE section (2-core CPU). Graph and mapping as in build_map.log:
#   eventllm build --model zoo:rwkv4-small --thresholds eventllm/zoo/rwkv4-small/thresholds.json -o g_small
#   eventllm map g_small --topology loihi -o m_small.json
eventllm simulate g_small --mapping m_small.json --backend sanafe --max-tokens 64 \
  --prompt "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful property of some one or other of their daughters." \
  --json simulate_sanafe.json
