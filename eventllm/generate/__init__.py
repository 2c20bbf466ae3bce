"""Text generation sessions on the torch model, the event-driven simulator or Lava."""

# Seeded nucleus sampling is the default of `generate` and the demo: greedy decoding of a small model loops
# ("I have not yet seen him. I have not yet seen him."); temperature 0 gives greedy. (Here, without torch, so
# that the command line can show them in --help before importing anything heavy.)
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
