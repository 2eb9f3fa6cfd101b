"""Tools to compose with PaCoRe graphs and agents (installed as ``pacore_graph.tools``)."""
