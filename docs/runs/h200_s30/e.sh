# H200 call E (session 30, a fresh lease): the corpus onto the device's disk and tokenised as fine-tuning reads it
# (session 27's call E; the zoo weights out of the tree, .carry/pg-books carried)
exec bash docs/runs/h200_s27/e.sh
