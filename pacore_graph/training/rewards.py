"""Outcome rewards for a PaCoRe synthesizer (paper §2.2): 1.0 when the final answer is right, else 0.0.

Only the synthesis's conclusion is graded: the text after its last ``</think>`` (the whole text when it has none,
the rule C applies at inference, :func:`pacore_graph.compaction.conclusion_of`), so reasoning that names a right
answer and then concludes a wrong one earns nothing. The graders are the eval harness's:

* **math**: :class:`~pacore_graph.eval.grading.MathVerifyGrader` (the last ``\\boxed{}``, else "The answer is
  ...", compared with math-verify) against the reference answer;
* **code**: :class:`~pacore_graph.eval.code.CodeGrader`: the conclusion's final program passes every test in the
  sandbox. The ground truth is then the problem's tests as JSON (:func:`code_ground_truth`): an object with
  ``tests`` (stdin → stdout cases) or ``check`` + ``entry_point`` (+ ``prompt``), HumanEval style; a bare list
  is read as ``tests``.

Two entry points, one per framework:

* :func:`correctness` is a TRL reward function (``GRPOTrainer(reward_funcs=[correctness])``): TRL calls it with
  the batch's ``prompts`` and ``completions`` and every other dataset column as a keyword argument, one value
  per completion, so the TRL export's ``answer`` and ``domain`` columns arrive as ``answer=`` and ``domain=``.
* :func:`compute_score` is verl's custom reward function (``custom_reward_function.path:
  pkg://pacore_graph.training.rewards``, ``name: compute_score``): verl's reward manager calls it once per
  response with the row's ``data_source`` (``pacore/math`` or ``pacore/code``), the decoded response and
  ``reward_model.ground_truth``. verl decodes responses with ``skip_special_tokens=True``: with a tokenizer that
  marks ``</think>`` as a special token (Qwen3's does not), the tag is gone and the whole response is graded.

**Code execution.** Rewarding a code episode runs the policy's program. As everywhere in the project, a face
the operator runs locally executes code in the sandbox when the operator chose code work (``pacore eval`` on a
code dataset, ``pacore run`` with the code-verified graph): here, building episodes with ``--domain code`` and
training on them is that choice, and only episodes whose domain is code run anything. What requires an explicit
``--allow-code-execution`` is serving such work to remote clients (``pacore serve``), which training never does.
Check :func:`pacore_graph.tools.sandbox_capabilities` on the training machines: without bubblewrap the sandbox
falls back to process isolation.

**Threads.** math-verify's time limit uses ``SIGALRM``, which only the main thread may set. TRL calls reward
functions from its main thread; verl's reward loop calls :func:`compute_score` from an executor thread, where
math answers are graded without math-verify's time limit (as math-verify advises for threads).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pacore_graph.compaction import conclusion_of
from pacore_graph.errors import ConfigError
from pacore_graph.eval.datasets import Problem
from pacore_graph.messages import text_of
from pacore_graph.training.export import DATA_SOURCE_PREFIX

if TYPE_CHECKING:
    from pacore_graph.eval.grading import Grader

__all__ = ["code_ground_truth", "compute_score", "correctness", "final_answer", "score"]

_DOMAINS = ("math", "code")
_CODE_KEYS = ("tests", "check", "entry_point", "prompt")
_graders: dict[str, Grader] = {}
_lock = threading.Lock()


def final_answer(text: str) -> str:
    """What is graded: the text after the last ``</think>`` (all of it when there is none)."""
    return conclusion_of(text)


def code_ground_truth(problem: Problem) -> str:
    """A code problem's ground truth for an episode: the tests its grader runs, as JSON (sorted keys)."""
    meta = {key: problem.metadata[key] for key in _CODE_KEYS if key in problem.metadata}
    if "tests" not in meta and "check" not in meta:
        raise ConfigError(f"code problem {problem.id!r} has no tests (metadata 'tests' or 'check' + 'entry_point')")
    return json.dumps(meta, sort_keys=True, ensure_ascii=False)


def _grader(domain: str) -> Grader:
    # math-verify's SIGALRM limit works in the main thread only: other threads get a grader without it.
    main = threading.current_thread() is threading.main_thread()
    key = domain if domain == "code" or main else f"{domain} (threads)"
    with _lock:
        grader = _graders.get(key)
        if grader is None:
            if domain == "code":
                from pacore_graph.eval.code import CodeGrader

                grader = CodeGrader()
            else:
                from pacore_graph.eval.grading import MathVerifyGrader

                grader = MathVerifyGrader(timeout=5 if main else None)
            _graders[key] = grader
    return grader


def _problem(ground_truth: str, domain: str) -> Problem:
    messages = [{"role": "user", "content": "(training episode)"}]
    if domain == "math":
        # The math grader caches the parsed reference by problem id: the reference itself is a safe id.
        return Problem(id=f"answer:{ground_truth}", messages=messages, answer=ground_truth)
    try:
        tests: Any = json.loads(ground_truth)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"a code episode's ground truth must be its tests as JSON (see code_ground_truth), got {ground_truth!r:.80}"
        ) from exc
    metadata = {"tests": tests} if isinstance(tests, list) else tests
    if not isinstance(metadata, dict) or not ("tests" in metadata or "check" in metadata):
        raise ConfigError("a code episode's ground truth must be a JSON object with 'tests' or 'check', or a list")
    return Problem(id="code-episode", messages=messages, answer="", category="code", metadata=metadata)


def score(text: str | None, ground_truth: str, domain: str = "math") -> float:
    """One completion's reward: 1.0 when its final answer (after the last ``</think>``) is right, else 0.0."""
    if domain not in _DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}; the rewards grade: {', '.join(_DOMAINS)}")
    problem = _problem(ground_truth, domain)
    if not text:
        return 0.0
    return 1.0 if _grader(domain).grade(problem, final_answer(text)).correct else 0.0


def _completion_text(completion: Any) -> str:
    """The text a TRL completion concludes with: a string, or the last assistant message of a conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                return text_of(message.get("content"))
        return ""
    raise ConfigError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def correctness(completions: Sequence[Any], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """TRL reward function: 1.0 per completion whose final answer is right, else 0.0.

    ``completions`` are strings (standard prompts) or lists of message dicts (conversational prompts, as in the
    TRL export); ``answer`` is the export's column, one reference per completion. The ``domain`` column, when
    given (``domain=``), picks the grader per completion (default math). Other keyword arguments (TRL's
    ``prompts``, ``completion_ids``, ``trainer_state``, the remaining columns) are ignored. Code completions are
    graded in parallel threads, each test run in the sandbox.
    """
    domains: Sequence[str] = kwargs.get("domain") or ["math"] * len(completions)
    if not len(completions) == len(answer) == len(domains):
        raise ConfigError(
            f"correctness got {len(completions)} completions, {len(answer)} answers and {len(domains)} domains; "
            "pass one answer (and domain) per completion, as TRL does"
        )
    texts = [_completion_text(c) for c in completions]
    rewards = [0.0] * len(texts)
    code = [i for i, domain in enumerate(domains) if domain == "code"]
    for i, domain in enumerate(domains):
        if domain != "code":
            rewards[i] = score(texts[i], answer[i], domain)
    if code:
        with ThreadPoolExecutor(max_workers=min(8, len(code))) as pool:
            for i, reward in zip(code, pool.map(lambda i: score(texts[i], answer[i], "code"), code), strict=True):
                rewards[i] = reward
    return rewards


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None, **kwargs: Any
) -> float:
    """verl custom reward function: 1.0 when the response's final answer is right, else 0.0.

    ``data_source`` is the verl export's ``pacore/<domain>``; ``ground_truth`` its ``reward_model.ground_truth``;
    ``extra_info`` (the row's ``extra_info``) and any keyword arguments verl's reward loop adds are not needed.
    """
    prefix, _, domain = str(data_source).partition("/")
    if prefix != DATA_SOURCE_PREFIX or domain not in _DOMAINS:
        raise ConfigError(
            f"compute_score grades pacore episodes (data_source pacore/math or pacore/code), got {data_source!r}; "
            "route other data sources to another reward function"
        )
    return score(solution_str, str(ground_truth), domain)
