"""Mapping process graphs onto neuromorphic many-core topologies (networkx; never imports torch)."""
