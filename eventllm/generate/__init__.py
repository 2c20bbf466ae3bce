"""Text generation on top of the models (and, later, the simulator)."""
