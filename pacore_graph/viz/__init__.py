"""Pictures of runs and graphs: the HTML trace view (no dependency) and PNG plots (the ``viz`` extra)."""

from pacore_graph.viz.html import render_trace_html
from pacore_graph.viz.plot import VIZ_INSTALL_HINT, draw_graph_png, plot_trace

__all__ = ["VIZ_INSTALL_HINT", "draw_graph_png", "plot_trace", "render_trace_html"]
