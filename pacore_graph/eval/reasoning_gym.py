"""reasoning-gym as a dataset source: its procedural generators, graded by each task's own ``score_answer``.

``reasoning-gym:TASK[,TASK...]?size=N&seed=S`` draws ``size`` problems (default 20) of each task from
reasoning-gym's generator seeded with ``seed`` (default 0); any other option is passed to the task's config
(``reasoning-gym:basic_arithmetic?size=5&min_terms=3``; values are read as JSON, else as text). Problems ask
for the answer the way reasoning-gym's own evaluations do: its ``default`` system prompt, which asks for
``<answer>...</answer>``.

:class:`ReasoningGymGrader` reads the answer as the task expects (the last ``<answer>`` tag, with
reasoning-gym's own ``extract_answer``; a reply without the tag falls back to the voting graphs' extraction,
``\\boxed{}`` or "The answer is ...", and a one-line reply without either is taken whole, as voting graphs
return the voted answer itself), rebuilds the task's entry from the problem's metadata (task, config,
index: generation is deterministic) and scores it with the task's ``score_answer``. A run is right when the
score is 1.0; the score itself is kept on the grade (some tasks give partial credit).

reasoning-gym is part of the ``eval`` extra; it is imported only when such a dataset is loaded or graded.
"""

from __future__ import annotations

import difflib
import importlib
import json
from typing import Any

from pacore_graph.eval.datasets import DatasetError, Problem
from pacore_graph.eval.grading import EVAL_INSTALL_HINT, Grade, MissingExtraError
from pacore_graph.extract import DEFAULT_FALLBACK_PATTERNS, ExtractionPolicy, extract_answer

__all__ = [
    "ANSWER_TAG_PATTERN",
    "EXAMPLE_TASKS",
    "ReasoningGymGrader",
    "describe_tasks",
    "load_reasoning_gym",
    "task_names",
]

#: The category of reasoning-gym problems (it picks :class:`ReasoningGymGrader`).
CATEGORY = "reasoning-gym"

#: A few tasks to show in ``--list-sources`` (all exist in reasoning-gym 0.1.25).
EXAMPLE_TASKS = ("basic_arithmetic", "chain_sum", "gsm_symbolic", "leg_counting", "knights_knaves", "countdown")

#: reasoning-gym's answer tag, as a fallback pattern for the voting graphs' extraction.
ANSWER_TAG_PATTERN = r"(?s)<answer>\s*(.*?)\s*</answer>"

#: How voting graphs read a reasoning-gym answer: the tag first, then the usual phrases.
EXTRACTION = ExtractionPolicy(boxed=False, fallback=(ANSWER_TAG_PATTERN, *DEFAULT_FALLBACK_PATTERNS))

_RESERVED = {"size", "seed"}


def _gym() -> Any:
    try:
        return importlib.import_module("reasoning_gym")  # ships no type information
    except ImportError as exc:
        raise MissingExtraError(f"reasoning-gym datasets need the reasoning-gym package: {EVAL_INSTALL_HINT}") from exc


def _utils() -> Any:
    _gym()
    return importlib.import_module("reasoning_gym.utils")


def task_names() -> list[str]:
    """Every task reasoning-gym registers, sorted."""
    _gym()
    factory: Any = importlib.import_module("reasoning_gym.factory")
    return sorted(factory.DATASETS)


def describe_tasks() -> str:
    """One line for ``--list-sources``: how many tasks there are, and a few of their names."""
    try:
        names = task_names()
    except MissingExtraError:
        return "not installed: pip install reasoning-gym (in the eval extra)"
    shown = [name for name in EXAMPLE_TASKS if name in names]
    return f"{len(names)} tasks, e.g. {', '.join(shown)}, ..."


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _int_option(options: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(options.get(key, default))
    except ValueError:
        raise DatasetError(f"reasoning-gym: {key} must be an integer (got {options[key]!r})") from None
    if key == "size" and value < 1:
        raise DatasetError("reasoning-gym: size must be at least 1")
    return value


def _check_tasks(tasks: list[str], known: list[str]) -> None:
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise DatasetError(
                f"unknown reasoning-gym task {task!r}{hint} (reasoning-gym has {len(known)} tasks; "
                "pacore eval --list-sources names some)"
            )


def _create(task: str, size: int, seed: int, config: dict[str, Any]) -> Any:
    try:
        return _gym().create_dataset(task, size=size, seed=seed, **config)
    except (TypeError, ValueError, AssertionError) as exc:
        raise DatasetError(f"reasoning-gym:{task}: the task rejects its options {config}: {exc}") from None


def load_reasoning_gym(name: str, options: dict[str, str]) -> list[Problem]:
    """``size`` problems of each comma-separated task in ``name``, from reasoning-gym's seeded generators."""
    tasks = [task.strip() for task in name.split(",") if task.strip()]
    if not tasks:
        raise DatasetError("reasoning-gym: name a task, e.g. reasoning-gym:basic_arithmetic?size=20&seed=0")
    _check_tasks(tasks, task_names())
    size, seed = _int_option(options, "size", 20), _int_option(options, "seed", 0)
    config = {key: _value(value) for key, value in options.items() if key not in _RESERVED}
    system = _utils().SYSTEM_PROMPTS["default"]
    problems: list[Problem] = []
    for task in tasks:
        dataset = _create(task, size, seed, config)
        for index in range(size):
            entry = dataset[index]
            problems.append(
                Problem(
                    id=f"{task}-{seed}-{index}",
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": entry["question"]}],
                    answer="" if entry.get("answer") is None else str(entry["answer"]),
                    category=CATEGORY,
                    metadata={"task": task, "size": size, "seed": seed, "config": config, "index": index},
                )
            )
    return problems


class ReasoningGymGrader:
    """Grades a reasoning-gym problem with its task's ``score_answer`` (see the module docstring)."""

    #: The extraction the voting graphs should use on these problems.
    graph_extraction = EXTRACTION

    def __init__(self) -> None:
        self._utils = _utils()
        self._datasets: dict[str, Any] = {}
        self._entries: dict[tuple[str, int], dict[str, Any]] = {}

    def _entry(self, problem: Problem) -> tuple[Any, dict[str, Any]]:
        meta = problem.metadata
        key = json.dumps({k: meta[k] for k in ("task", "size", "seed", "config")}, sort_keys=True)
        dataset = self._datasets.get(key)
        if dataset is None:
            dataset = self._datasets[key] = _create(meta["task"], meta["size"], meta["seed"], meta["config"])
        entry = self._entries.get((key, meta["index"]))
        if entry is None:
            entry = self._entries[(key, meta["index"])] = dataset[meta["index"]]
        return dataset, entry

    def extract(self, answer: str | None) -> str | None:
        """The answer as the task expects it: the last ``<answer>`` tag, else ``\\boxed{}``/"The answer is"."""
        if not answer:
            return None
        tagged: str | None = self._utils.extract_answer(answer)
        if tagged is not None:
            return tagged
        phrased = extract_answer(answer, ExtractionPolicy())
        if phrased is not None:
            return phrased
        bare = answer.strip()
        return bare if bare and "\n" not in bare else None  # a voting graph's answer is the voted answer itself

    def grade(self, problem: Problem, answer: str | None) -> Grade:
        """Right when the task's ``score_answer`` gives 1.0 for the extracted answer."""
        extracted = self.extract(answer)
        if extracted is None:
            return Grade(correct=False, extracted=None, score=0.0)
        dataset, entry = self._entry(problem)
        try:
            score = float(dataset.score_answer(extracted, entry))
        except Exception:  # a verifier that chokes on a malformed answer: that answer is wrong
            score = 0.0
        return Grade(correct=score >= 1.0, extracted=extracted, score=score)
