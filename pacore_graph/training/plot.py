"""The message accuracy histogram: how many problems have each number of right pool messages, and what was kept."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pacore_graph.training.build import BuildResult

__all__ = ["plot_message_accuracy"]


def plot_message_accuracy(result: BuildResult, path: Path) -> Path:
    """A bar per message accuracy (right slots of the pool), split into kept and dropped problems; saved as a PNG.

    A dotted line marks each stage-1 bound that applies (9/24 for math, 15/24 for code).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe off the main thread
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from pacore_graph.training.stages import STAGE1_BOUND_TEXT, STAGE1_UPPER

    summaries = result.summaries
    slots = max((s.slots for s in summaries), default=result.settings.pool_size)
    xs = list(range(slots + 1))
    kept = [sum(1 for s in summaries if s.kept and s.right == x) for x in xs]
    dropped = [sum(1 for s in summaries if not s.kept and s.right == x) for x in xs]
    figure, axes = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    try:
        axes.bar(xs, kept, color="#2a7fbf", label=f"kept by stage {result.settings.stage}")
        axes.bar(xs, dropped, bottom=kept, color="#bbbbbb", label="not kept")
        for domain in sorted({s.domain for s in summaries}):
            bound = float(STAGE1_UPPER[domain]) * slots
            axes.axvline(bound - 0.5, linestyle=":", color="#aa3333")
            axes.annotate(
                f"stage 1 < {STAGE1_BOUND_TEXT[domain]} ({domain})",
                (bound - 0.5, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=7,
                color="#aa3333",
            )
        axes.set_xlim(-0.7, slots + 0.7)
        axes.set_xlabel(f"right messages of the pool (of {slots})")
        axes.set_ylabel("problems")
        axes.set_title(f"message accuracy of {len(summaries)} problems")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # problems are counted whole
        axes.legend(fontsize=7, loc="upper right")
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
