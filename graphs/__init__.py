"""Reasoning graphs built from pacore-graph's core parts (installed as ``pacore_graph.graphs``)."""
