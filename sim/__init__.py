"""Message-passing simulation of a mapped process graph: events, memory accesses, energy, latency (no torch)."""
