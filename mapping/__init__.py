"""Mapping an event-driven process graph onto neuromorphic cores (networkx; never imports torch).

    topology (mapping.topology)  →  partition into core-sized shards (mapping.partition)
    →  place shards on cores and route (mapping.place)  →  Mapping (mapping.result)

>>> from mapping import map_graph                       # doctest: +SKIP
>>> m = map_graph(graph, "seneca"); m.save("mapping.json")
"""

from mapping.result import Mapping, map_graph
from mapping.topology import Topology, load_topology

__all__ = ["Mapping", "Topology", "load_topology", "map_graph"]
