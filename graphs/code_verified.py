"""``code-verified``: PaCoRe for code problems, where every program is run on the sample tests before it is passed on.

Beyond the paper: the synthesizer reasons over verified facts instead of the explorers' claims. Each explorer's
conclusion ends with a program in a markdown fence; the verifying compactor runs it in the sandbox on the sample
tests and appends the evidence to the reference message, e.g.::

    ...the explorer's conclusion...

    [Verification of the program above on the sample tests: passed 2/3 sample tests; failed on input '10 1':
    expected '11', got '9']

The synthesizer's own program is run too; the output state has ``program`` (None when the answer has no
program) and ``verification`` (``{"program_found", "passed", "total", "evidence", "outcomes"}``).

::

    START → prepare → plan ─┬─ (round r ≤ R) → explorers (K_r explore tasks) → compact → plan ...
                            └─ (after round R) → synthesize → verify_answer → END

Input: ``{"problem": str, "tests": [{"input": str, "output": str}, ...]}``. Without ``tests``, sample tests are
read from the problem text: each "Sample Input" (or "Example Input", optionally numbered, with or without a
colon) block paired with the "Sample Output" block after it; a block is a fenced block (fences stripped) or
the lines up to a blank line. With no tests at all, the
evidence says so and programs are still checked for being present.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, NotRequired

from langgraph.graph import END, StateGraph
from typing_extensions import TypedDict

from pacore_graph.clients.base import ChatBackend
from pacore_graph.errors import ConfigError
from pacore_graph.graph import add_round_loop, compile_graph
from pacore_graph.messages import last_user_text
from pacore_graph.nodes import PaCoReNodes
from pacore_graph.state import PaCoReContext, PaCoReInput, PaCoReOutput, PaCoReState

# Only the tools' public API.
from pacore_graph.tools import (
    NO_PROGRAM,
    SandboxLimits,
    TestCase,
    TestReport,
    arun_tests,
    describe_report,
    extract_program,
)

from .kinds import CompiledGraph, GraphType

if TYPE_CHECKING:
    from .spec import GraphSpec

__all__ = [
    "CODE_VERIFIED",
    "MAX_SAMPLE_TEXT_CHARS",
    "CodeVerifiedInput",
    "CodeVerifiedOutput",
    "CodeVerifiedState",
    "Verification",
    "build_code_verified",
    "build_code_verified_graph",
    "evidence_message",
    "sample_tests_from_text",
]

#: Sandbox limits for one program on one test: model-written solutions to sample tests should be quick.
VERIFY_LIMITS = SandboxLimits(wall_seconds=10, cpu_seconds=5, memory_mb=512, max_output_bytes=200_000)
#: Programs verified at once. Sandboxed runs share one unprivileged uid, whose process limit they share.
VERIFY_CONCURRENCY = 4


class Verification(TypedDict):
    """The result of running one program on the sample tests."""

    program_found: bool
    passed: int
    total: int
    evidence: str
    outcomes: list[dict[str, Any]]


class CodeVerifiedInput(PaCoReInput, total=False):
    """Input: the problem (or messages) and, optionally, its sample tests."""

    tests: list[dict[str, str]]


class CodeVerifiedState(PaCoReState):
    """PaCoRe's state plus the sample tests and the verification of the final program."""

    tests: NotRequired[list[dict[str, str]]]
    program: NotRequired[str | None]
    verification: NotRequired[Verification]


class CodeVerifiedOutput(PaCoReOutput):
    """Output: the answer and usage, plus the final program and its verification."""

    program: str | None
    verification: Verification


#: Sample tests are read from at most this many characters of the problem (the statement's start).
MAX_SAMPLE_TEXT_CHARS = 1_000_000
# One line each: a header ends its line ("... Sample Input 2:"); a plain block stops at a line opening a header.
_HEADER_LINE = re.compile(r"(?:sample|example)\s+(input|output)(?:[ \t]+\d+)?[ \t]*:?[ \t]*$", re.IGNORECASE)
_HEADER_START = re.compile(r"[ \t]*(?:sample|example)\s+(?:input|output)", re.IGNORECASE)
_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})")


def _header(line: str) -> str | None:
    """``"input"`` or ``"output"`` when ``line`` ends with a sample header."""
    if "put" not in line.lower():  # cheap filter: most lines are not headers
        return None
    match = _HEADER_LINE.search(line)
    return match.group(1).lower() if match else None


class _Lines:
    """The problem's lines, with each fence line's next identical fence found in one backward pass."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.fence: list[str | None] = []
        for line in self.lines:
            match = _FENCE.match(line)
            self.fence.append(match.group(1) if match else None)
        self.closing: dict[int, int] = {}
        nearest: dict[str, int] = {}
        for index in range(len(self.lines) - 1, -1, -1):
            token = self.fence[index]
            if token is not None:
                if token in nearest:
                    self.closing[index] = nearest[token]
                if self.lines[index].strip() == token:  # only a bare fence line closes a block
                    nearest[token] = index

    def block(self, start: int) -> tuple[str, int]:
        """The block starting at line ``start`` (fences stripped) and the index of the line after it."""
        lines = self.lines
        if start < len(lines) and start in self.closing:
            end = self.closing[start]
            return "\n".join(lines[start + 1 : end]).strip("\n") + "\n", end + 1
        end = start
        while end < len(lines) and lines[end].strip() and not (end > start and _HEADER_START.match(lines[end])):
            end += 1
        return "\n".join(lines[start:end]).strip("\n") + "\n", end


def sample_tests_from_text(text: str) -> list[TestCase]:
    """Sample tests written in a problem statement ("Sample Input 1" ... "Sample Output 1" ...).

    Linear in the text's length, and only its first :data:`MAX_SAMPLE_TEXT_CHARS` characters are read.
    """
    if len(text) > MAX_SAMPLE_TEXT_CHARS:
        text = text[: text.rfind("\n", 0, MAX_SAMPLE_TEXT_CHARS) + 1]
    scan = _Lines(text)
    lines = scan.lines
    tests: list[TestCase] = []
    index = 0
    while index < len(lines):
        if _header(lines[index]) != "input":
            index += 1
            continue
        given, after = scan.block(index + 1)
        while after < len(lines) and not lines[after].strip():
            after += 1
        if after < len(lines) and _HEADER_START.match(lines[after]) and _header(lines[after]) == "output":
            expected, index = scan.block(after + 1)
            tests.append(TestCase(input=given, output=expected))
        else:
            index = max(index + 1, after)
    return tests


def evidence_message(conclusion: str, evidence: str) -> str:
    """A reference message: the conclusion, then what running its program showed."""
    return f"{conclusion.rstrip()}\n\n[Verification of the program above on the sample tests: {evidence}]"


async def verify(text: str, tests: list[TestCase], semaphore: asyncio.Semaphore) -> Verification:
    """Extract the last program of ``text`` and run it on ``tests`` in the sandbox."""
    program = extract_program(text)
    if program is None:
        return Verification(program_found=False, passed=0, total=len(tests), evidence=NO_PROGRAM, outcomes=[])
    if not tests:
        return Verification(
            program_found=True, passed=0, total=0, evidence="no sample tests to run the program on", outcomes=[]
        )
    async with semaphore:
        report: TestReport = await arun_tests(program, tests, limits=VERIFY_LIMITS)
    return Verification(
        program_found=True,
        passed=report.passed,
        total=report.total,
        evidence=describe_report(report),
        outcomes=[outcome.model_dump() for outcome in report.outcomes],
    )


class _VerifyingNodes:
    """The nodes this graph adds to the core ones: prepare with tests, a verifying compactor, a final check."""

    def __init__(self, nodes: PaCoReNodes) -> None:
        self.nodes = nodes

    async def prepare(self, state: CodeVerifiedState) -> dict[str, Any]:
        update = self.nodes.prepare(state)
        given = state.get("tests")
        if given is not None:
            try:
                tests = [TestCase.model_validate(test) for test in given]
            except ValueError as exc:
                raise ConfigError(
                    f"tests must be a list of {{'input': str, 'output': str}} mappings: {exc}".replace("\n", " ")
                ) from None
        else:
            # Off the event loop: a long statement must not stall the other runs of a server.
            tests = await asyncio.to_thread(sample_tests_from_text, _problem_text(update["conversation"]))
        update["tests"] = [test.model_dump() for test in tests]
        return update

    async def verify_compact(self, state: CodeVerifiedState) -> dict[str, Any]:
        """C(Ω_r) with evidence: each kept conclusion carries what running its program on the tests showed.

        Only the trajectories compaction keeps are run (the dropped ones would not be passed on anyway).
        """
        tests = _tests(state)
        semaphore = asyncio.Semaphore(VERIFY_CONCURRENCY)
        kept = self.nodes.selection(state["round"], state["omega"]).kept
        verdicts = await asyncio.gather(*(verify(t["conclusion"], tests, semaphore) for t in kept))
        messages = [evidence_message(t["conclusion"], v["evidence"]) for t, v in zip(kept, verdicts, strict=True)]
        return self.nodes.close_round(state, state["omega"], messages)

    async def verify_answer(self, state: CodeVerifiedState) -> dict[str, Any]:
        """Run the synthesizer's program on the tests and report it in the output."""
        verdict = await verify(state["answer"], _tests(state), asyncio.Semaphore(1))
        return {"program": extract_program(state["answer"]), "verification": verdict}


def _tests(state: CodeVerifiedState) -> list[TestCase]:
    return [TestCase.model_validate(test) for test in state.get("tests", [])]


def _problem_text(conversation: list[dict[str, Any]]) -> str:
    return last_user_text(conversation) or ""


def build_code_verified_graph(
    nodes: PaCoReNodes, *, checkpointer: Any = None, name: str = "pacore-code-verified"
) -> CompiledGraph:
    """Wire the code-verified graph from core nodes (see the module docstring)."""
    verifying = _VerifyingNodes(nodes)
    graph = StateGraph(
        CodeVerifiedState,
        context_schema=PaCoReContext,
        input_schema=CodeVerifiedInput,
        output_schema=CodeVerifiedOutput,
    )
    add_round_loop(graph, nodes, prepare=verifying.prepare, compact=verifying.verify_compact)
    graph.add_node("verify_answer", verifying.verify_answer)
    graph.add_edge("synthesize", "verify_answer")
    graph.add_edge("verify_answer", END)
    return compile_graph(graph, checkpointer=checkpointer, name=name)


def build_code_verified(spec: GraphSpec, backend: ChatBackend, *, checkpointer: Any = None) -> CompiledGraph:
    """The code-verified graph configured by ``spec``."""
    return build_code_verified_graph(PaCoReNodes(backend, spec.to_config()), checkpointer=checkpointer, name=spec.name)


CODE_VERIFIED = GraphType(
    name="code-verified",
    build=build_code_verified,
    description="PaCoRe for code: each program is run on the sample tests and the evidence passed on",
    executes_code=True,
)
