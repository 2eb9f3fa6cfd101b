"""PNG pictures with matplotlib (the ``viz`` extra): a trace summary, and a graph's topology.

Both render locally with the Agg backend: no display, no web service.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pacore_graph.errors import ConfigError
from pacore_graph.trace import Trace

__all__ = ["VIZ_INSTALL_HINT", "draw_graph_png", "plot_trace"]

VIZ_INSTALL_HINT = "pictures need matplotlib: pip install 'pacore-graph[viz]'"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError(VIZ_INSTALL_HINT) from exc
    matplotlib.use("Agg")  # headless: never open a window
    import matplotlib.pyplot as plt

    return plt


def plot_trace(trace: Trace, path: str | Path) -> Path:
    """Save a PNG summary of ``trace``: completion tokens per round, and the answer distribution per round."""
    plt = _pyplot()
    labels = ["final" if r.final else f"round {r.round}" for r in trace.rounds]
    tokens = [sum(t.completion_tokens for t in r.trajectories) for r in trace.rounds]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar(labels, tokens, color="#0072B2")
    left.set_title("completion tokens per round")
    left.set_ylabel("tokens")
    for x, value in enumerate(tokens):
        left.annotate(f"{value:,}", (x, value), ha="center", va="bottom", fontsize=8)

    answers = Counter(t.answer or "(none)" for t in trace.trajectories)
    top = [a for a, _ in answers.most_common(6)]
    bottoms = [0] * len(trace.rounds)
    palette = ["#009E73", "#0072B2", "#E69F00", "#CC79A7", "#56B4E9", "#D55E00", "#bbbbbb"]
    for i, answer in enumerate([*top, "(other)"]):
        counts = []
        for row in trace.rounds:
            given = [t.answer or "(none)" for t in row.trajectories]
            counts.append(sum(1 for a in given if (a == answer if answer != "(other)" else a not in top)))
        if not any(counts):
            continue
        short = answer if len(answer) <= 24 else answer[:23] + "…"
        right.bar(labels, counts, bottom=bottoms, label=short, color=palette[i % len(palette)])
        bottoms = [b + c for b, c in zip(bottoms, counts, strict=True)]
    right.yaxis.get_major_locator().set_params(integer=True)
    right.set_title("answers per round")
    right.set_ylabel("trajectories")
    right.legend(fontsize=8, loc="upper right")
    answer = " ".join((trace.answer or "(none)").split())
    answer = answer if len(answer) <= 60 else answer[:59] + "…"
    figure.suptitle(f"{trace.graph.name}: {len(trace.trajectories)} trajectories; answer: {answer}")
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target


def draw_graph_png(
    nodes: list[str],
    edges: list[tuple[str, str, bool]],
    path: str | Path,
    title: str = "",
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Draw a small DAG (``edges`` are ``(source, target, conditional)``) as a PNG, top to bottom.

    ``labels`` gives a node's text where it is not just its name (e.g. its K).

    Layers are the longest path from the first node once back edges (loops, found by a depth-first search)
    are set aside; back edges curve, conditional edges are dashed. This replaces LangGraph's
    ``draw_mermaid_png``, which calls a web service.
    """
    plt = _pyplot()
    successors: dict[str, list[str]] = {name: [] for name in nodes}
    for a, b, _ in edges:
        successors[a].append(b)
    back: set[tuple[str, str]] = set()
    seen: dict[str, bool] = {}  # False while on the DFS stack, True once finished

    def visit(node: str) -> None:
        seen[node] = False
        for nxt in successors[node]:
            if nxt not in seen:
                visit(nxt)
            elif seen[nxt] is False:
                back.add((node, nxt))
        seen[node] = True

    for name in nodes:
        if name not in seen:
            visit(name)
    layer = dict.fromkeys(nodes, 0)
    for _ in nodes:  # longest path over a DAG: at most len(nodes) rounds of relaxation
        for a, b, _conditional in edges:
            if (a, b) not in back and layer[b] < layer[a] + 1:
                layer[b] = layer[a] + 1
    rows: dict[int, list[str]] = {}
    for name in nodes:
        rows.setdefault(layer[name], []).append(name)
    position = {}
    for depth, names in rows.items():
        for i, name in enumerate(names):
            position[name] = ((i + 1) / (len(names) + 1), -depth)
    figure, axes = plt.subplots(figsize=(5, 1.3 * (len(rows) + 1)))
    for a, b, conditional in edges:
        (x1, y1), (x2, y2) = position[a], position[b]
        curved = (a, b) in back or abs(layer[b] - layer[a]) > 1  # loops and long edges go around the nodes
        axes.annotate(
            "",
            xy=(x2, y2 + (-0.18 if (a, b) in back else 0.18)),
            xytext=(x1, y1 + (0.18 if (a, b) in back else -0.18)),
            arrowprops={
                "arrowstyle": "-|>",
                "linestyle": "--" if conditional else "-",
                "color": "#666",
                "connectionstyle": "arc3,rad=0.6" if curved else "arc3,rad=0",
            },
        )
    for name, (x, y) in position.items():
        axes.text(
            x,
            y,
            (labels or {}).get(name, name),
            ha="center",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "#E8F1FA", "edgecolor": "#0072B2"},
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(-max(rows) - 0.6, 0.6)
    axes.axis("off")
    if title:
        axes.set_title(title)
    target = Path(path)
    figure.savefig(target, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return target
