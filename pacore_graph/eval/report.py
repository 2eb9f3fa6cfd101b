"""Metrics per graph, the markdown table, and the accuracy-vs-compute plot (the paper's Fig. 1).

Per graph, over the records of ``runs`` runs on ``problems`` problems:

* **mean accuracy**: pass@1 of each run (the fraction of problems it got right), averaged over runs; its
  **standard error** is the sample standard deviation of the per-run accuracies over √runs (None for one run),
  i.e. the sampling noise on this fixed set of problems, as the paper's "averaged over 64 runs" figures have.
* **majority-vote accuracy**: per problem, a majority vote over the runs' extracted answers (ties go to the
  earliest run); the problem counts as right when the winning answer was graded right.
* **mean effective TTC tokens** and **mean wall time**: per run of one problem, averaged over all records.
* **synthesis diagnostics** (graphs that end in a synthesis over references): see
  :mod:`pacore_graph.eval.synthesis`; printed as a second table by :func:`~pacore_graph.eval.synthesis.synthesis_table`.

The plot puts each graph at (mean TTC, mean accuracy) and, when given, the self-consistency curve measured from
the round-1 pool (:mod:`pacore_graph.eval.self_consistency`) as a line beside them; the accuracy axis always spans
0–100 %.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pacore_graph.eval.runner import EvalGraph, EvalRecord
from pacore_graph.eval.self_consistency import SCPoint
from pacore_graph.eval.synthesis import SynthesisDiagnostics, diagnose
from pacore_graph.extract import majority_vote, normalize_answer

__all__ = ["GraphMetrics", "compute_metrics", "markdown_table", "plot_accuracy_vs_ttc"]


class GraphMetrics(BaseModel):
    """The measured figures of one graph (see the module docstring for the definitions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    graph: str
    schedule: list[int]
    problems: int
    runs: int
    records: int
    mean_accuracy: float
    stderr: float | None
    majority_accuracy: float
    mean_ttc_tokens: float
    mean_seconds: float
    failed: int
    pool_served: int
    pool_generated: int
    synthesis: SynthesisDiagnostics | None = None


def compute_metrics(graph: EvalGraph, records: Sequence[EvalRecord]) -> GraphMetrics:
    """The figures of ``graph`` from its records (records of other graphs are ignored)."""
    mine = [r for r in records if r.graph == graph.label]
    by_run: dict[int, list[bool]] = defaultdict(list)
    by_problem: dict[str, list[EvalRecord]] = defaultdict(list)
    for record in mine:
        by_run[record.run].append(record.correct)
        by_problem[record.problem_id].append(record)
    run_accuracies = [sum(marks) / len(marks) for _, marks in sorted(by_run.items())]
    mean = statistics.fmean(run_accuracies) if run_accuracies else 0.0
    stderr = statistics.stdev(run_accuracies) / math.sqrt(len(run_accuracies)) if len(run_accuracies) > 1 else None
    majority_right = 0
    for problem_records in by_problem.values():
        ordered = sorted(problem_records, key=lambda r: r.run)
        vote = majority_vote(r.extracted for r in ordered)
        if vote.answer is None:
            continue
        winner = next(r for r in ordered if r.extracted is not None and normalize_answer(r.extracted) == vote.answer)
        majority_right += winner.correct
    return GraphMetrics(
        graph=graph.label,
        schedule=list(graph.spec.schedule.rounds),
        problems=len(by_problem),
        runs=len(by_run),
        records=len(mine),
        mean_accuracy=mean,
        stderr=stderr,
        majority_accuracy=majority_right / len(by_problem) if by_problem else 0.0,
        mean_ttc_tokens=statistics.fmean(r.effective_ttc_tokens for r in mine) if mine else 0.0,
        mean_seconds=statistics.fmean(r.seconds for r in mine) if mine else 0.0,
        failed=sum(r.error is not None for r in mine),
        pool_served=sum(r.pool_served for r in mine),
        pool_generated=sum(r.pool_generated for r in mine),
        synthesis=diagnose(mine),
    )


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_table(metrics: Sequence[GraphMetrics]) -> str:
    """The graph × metrics table, in markdown (accuracies in percent)."""
    lines = [
        "| graph | schedule | problems × runs | accuracy % (mean ± SE) | majority vote % | mean TTC tokens "
        "| mean wall s | failed runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in metrics:
        stderr = f" ± {_percent(m.stderr)}" if m.stderr is not None else ""
        lines.append(
            f"| {m.graph} | {m.schedule} | {m.problems} × {m.runs} | {_percent(m.mean_accuracy)}{stderr} "
            f"| {_percent(m.majority_accuracy)} | {m.mean_ttc_tokens:,.0f} | {m.mean_seconds:.2f} | {m.failed} |"
        )
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_ttc(
    metrics: Sequence[GraphMetrics],
    path: str | Path,
    *,
    title: str = "",
    sc_curve: Sequence[SCPoint] = (),
) -> Path:
    """Accuracy (0–100 %) against mean effective TTC tokens (log x), one labelled point per graph, saved as a PNG.

    ``sc_curve`` (SC@k from the round-1 pool) is drawn as a dashed line with each point labelled by its k.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe off the main thread
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    try:
        for index, m in enumerate(metrics):
            x = max(m.mean_ttc_tokens, 1.0)  # a log axis has no zero
            y = 100 * m.mean_accuracy
            yerr = 100 * m.stderr if m.stderr is not None else None
            axes.errorbar([x], [y], yerr=None if yerr is None else [yerr], fmt="o", capsize=4, label=m.graph)
            # Alternate label sides, so graphs at nearly the same point stay readable.
            dx, ha = (6, "left") if index % 2 == 0 else (-6, "right")
            dy = 6 if index % 4 < 2 else -12
            axes.annotate(m.graph, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=8)
        if sc_curve:
            sc_x = [max(p.mean_ttc_tokens, 1.0) for p in sc_curve]
            sc_y = [100 * p.accuracy for p in sc_curve]
            axes.plot(sc_x, sc_y, "--", marker=".", color="#777777", label="SC@k (round-1 pool)")
            for point, x, y in zip(sc_curve, sc_x, sc_y, strict=True):
                axes.annotate(
                    f"SC@{point.k}", (x, y), textcoords="offset points", xytext=(0, -11), ha="center", fontsize=7
                )
        axes.set_xscale("log")
        # Ticks at 1-2-5 steps with plain numbers: a narrow log range otherwise gets unreadable labels.
        axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        xs = [max(m.mean_ttc_tokens, 1.0) for m in metrics] + [max(p.mean_ttc_tokens, 1.0) for p in sc_curve]
        if xs:
            axes.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        # Always the whole 0–100 range (a zoomed axis makes small differences look large), with room for the
        # markers and labels at the ends.
        axes.set_ylim(-4, 106)
        axes.set_yticks(range(0, 101, 20))
        axes.set_xlabel("mean effective TTC tokens per problem (log)")
        axes.set_ylabel("accuracy % (mean over runs, ± SE)")
        axes.set_title(title or "accuracy vs test-time compute")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7, loc="best")
        figure.tight_layout()
        target = Path(path)
        figure.savefig(target)
    finally:
        plt.close(figure)
    return target
