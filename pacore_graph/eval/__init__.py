"""The evaluation harness: run graphs over a dataset, grade, and measure accuracy against compute.

``pacore eval`` is its command line. The parts:

* :mod:`~pacore_graph.eval.datasets`: JSONL datasets (reference, simple or code format) and the named sources.
* :mod:`~pacore_graph.eval.grading`: the :class:`Grader` protocol, :class:`MathVerifyGrader` (math-verify) and
  :class:`CategoryGrader` (a grader per problem category).
* :mod:`~pacore_graph.eval.reasoning_gym`: reasoning-gym's generators as a source, graded by each task's verifier.
* :mod:`~pacore_graph.eval.code`: the sandboxed code grader (:class:`CodeGrader`) and HumanEval.
* :mod:`~pacore_graph.eval.pool`: round-1 pool reuse, as a backend wrapper (:class:`PoolBackend`).
* :mod:`~pacore_graph.eval.runner`: resumable runs (:func:`run_eval`, ``results.jsonl``).
* :mod:`~pacore_graph.eval.synthesis`: the synthesis diagnostics (emergent correctness, majority override, ...).
* :mod:`~pacore_graph.eval.self_consistency`: SC@k curves from the round-1 pool, with no new request.
* :mod:`~pacore_graph.eval.report`: metrics, the markdown table and the accuracy-vs-TTC plot.

This is a face-level package: it may import the graphs and the tools (the code grader runs the sandbox), and
nothing in the core imports it.
"""

from pacore_graph.eval.code import CodeGrader
from pacore_graph.eval.datasets import DatasetError, Problem, load_dataset, make_arith
from pacore_graph.eval.grading import (
    CategoryGrader,
    Grade,
    Grader,
    MathVerifyGrader,
    MissingExtraError,
    require_eval_extras,
)
from pacore_graph.eval.pool import EvalCounters, PoolBackend, TrajectoryPool
from pacore_graph.eval.report import GraphMetrics, compute_metrics, markdown_table, plot_accuracy_vs_ttc
from pacore_graph.eval.runner import EvalGraph, EvalRecord, ResultsLog, resolve_eval_graphs, run_eval
from pacore_graph.eval.self_consistency import SCPoint, sc_curve
from pacore_graph.eval.synthesis import SynthesisDiagnostics, SynthesisView, diagnose

__all__ = [
    "CategoryGrader",
    "CodeGrader",
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
    "SCPoint",
    "SynthesisDiagnostics",
    "SynthesisView",
    "TrajectoryPool",
    "compute_metrics",
    "diagnose",
    "load_dataset",
    "make_arith",
    "markdown_table",
    "plot_accuracy_vs_ttc",
    "require_eval_extras",
    "resolve_eval_graphs",
    "run_eval",
    "sc_curve",
]
