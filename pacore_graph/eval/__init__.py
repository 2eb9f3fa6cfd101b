"""The evaluation harness: run graphs over a dataset, grade, and measure accuracy against compute.

``pacore eval`` is its command line. The parts:

* :mod:`~pacore_graph.eval.datasets`: JSONL datasets (reference or simple format) and generated built-in sets.
* :mod:`~pacore_graph.eval.grading`: the :class:`Grader` protocol and :class:`MathVerifyGrader` (math-verify).
* :mod:`~pacore_graph.eval.pool`: round-1 pool reuse, as a backend wrapper (:class:`PoolBackend`).
* :mod:`~pacore_graph.eval.runner`: resumable runs (:func:`run_eval`, ``results.jsonl``).
* :mod:`~pacore_graph.eval.report`: metrics, the markdown table and the accuracy-vs-TTC plot.

This is a face-level package: it may import the graphs, and nothing in the core imports it.
"""

from pacore_graph.eval.datasets import DatasetError, Problem, load_dataset, make_arith
from pacore_graph.eval.grading import Grade, Grader, MathVerifyGrader, MissingExtraError, require_eval_extras
from pacore_graph.eval.pool import EvalCounters, PoolBackend, TrajectoryPool
from pacore_graph.eval.report import GraphMetrics, compute_metrics, markdown_table, plot_accuracy_vs_ttc
from pacore_graph.eval.runner import EvalGraph, EvalRecord, ResultsLog, resolve_eval_graphs, run_eval

__all__ = [
    "DatasetError",
    "EvalCounters",
    "EvalGraph",
    "EvalRecord",
    "Grade",
    "Grader",
    "GraphMetrics",
    "MathVerifyGrader",
    "MissingExtraError",
    "PoolBackend",
    "Problem",
    "ResultsLog",
    "TrajectoryPool",
    "compute_metrics",
    "load_dataset",
    "make_arith",
    "markdown_table",
    "plot_accuracy_vs_ttc",
    "require_eval_extras",
    "resolve_eval_graphs",
    "run_eval",
]
