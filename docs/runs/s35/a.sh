# H200 call A (session 35, a fresh lease): pg-books valid/test onto the device's disk (call B reads them there), then
# zoo:rwkv4-tiny's methods (weights of rwkv4-small and opt-tiny out of the tree; .carry holds the data)
set -u
mkdir -p /tmp/keep && rm -rf /tmp/keep/pg-books && cp -r .carry/pg-books /tmp/keep/pg-books
bash docs/runs/s35/methods.sh tiny zoo:rwkv4-tiny .carry/gutenberg
