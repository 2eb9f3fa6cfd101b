"""The code-verified graph: programs are run on the sample tests, and the evidence reaches the synthesizer."""

import re

import pytest

from pacore_graph import ConfigError, VLLMClient
from pacore_graph.graphs import discover_graphs, load_graph, load_spec
from pacore_graph.graphs.code_verified import evidence_message, sample_tests_from_text
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FunctionBackend
from pacore_graph.tools import TestCase

PROBLEM = "Read two integers a and b from one line and print a + b."
TESTS = [
    {"input": "1 2\n", "output": "3\n"},
    {"input": "5 7\n", "output": "12\n"},
    {"input": "10 -3\n", "output": "7\n"},
]

CORRECT = "a, b = map(int, input().split())\nprint(a + b)\n"
WRONG_BRANCH = "a, b = map(int, input().split())\nprint(a + b if a < 10 else a - b)\n"
CRASHES = "a, b = map(int, input().split())\nprint(total)\n"


def answer(program: str, label: str) -> str:
    return f"<think>let me write it ({label})</think>Here is my solution ({label}).\n\n```python\n{program}```\n"


def is_synthesis(text: str) -> bool:
    return text.startswith("You are given a problem and a list of reference responses.")


def references(text: str) -> list[str]:
    body = text.split("Reference Responses:\n", 1)[1].rsplit("\n\n\nNow, based on", 1)[0]
    return [part.strip("\n") for part in re.split(r"\nReference \d+:\n", body) if part.strip("\n")]


def script(request):
    """Round 1: one correct program and two wrong ones (by arrival order); the synthesis answers correctly."""
    if is_synthesis(request.last_user_content):
        return FakeReply(content=answer(CORRECT, "final"))
    program, label = [(CORRECT, "correct"), (WRONG_BRANCH, "branch"), (CRASHES, "crash")][request.index]
    return FakeReply(content=answer(program, label))


async def test_round_2_prompt_carries_per_program_evidence_over_real_http():
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url) as client:
            graph = load_graph("pacore-code-verified", client, schedule=[3])
            state = await graph.ainvoke({"problem": PROBLEM, "tests": TESTS})
        requests = list(server.requests)
    assert len(requests) == 4
    synthesis = requests[-1].last_user_content
    assert is_synthesis(synthesis)
    refs = {re.search(r"solution \((\w+)\)", ref).group(1): ref for ref in references(synthesis)}
    assert set(refs) == {"correct", "branch", "crash"}
    assert refs["correct"].endswith("[Verification of the program above on the sample tests: passed 3/3 sample tests]")
    assert "passed 2/3 sample tests; failed on input '10 -3': expected '7', got '13'" in refs["branch"]
    assert (
        "passed 0/3 sample tests; failed on input '1 2': expected '3', error: exit code 1: NameError" in (refs["crash"])
    )
    # The explorers' thinking never reaches the synthesizer; their programs and the evidence do.
    assert "let me write it" not in synthesis
    assert "print(a + b if a < 10 else a - b)" in refs["branch"]
    # The final program is run and reported.
    assert state["program"] == CORRECT
    assert state["verification"]["program_found"] is True
    assert (state["verification"]["passed"], state["verification"]["total"]) == (3, 3)
    assert state["verification"]["evidence"] == "passed 3/3 sample tests"
    assert [row["round"] for row in state["usage"]["rounds"]] == [1, 2]


async def test_no_program_is_reported_as_such():
    def reply(messages, params):
        text = messages[-1]["content"]
        return "I am not sure, the answer is 3." if is_synthesis(text) else "<think>hm</think>Just add them: 3."

    backend = FunctionBackend(reply)
    state = await load_graph("pacore-code-verified", backend, schedule=[2]).ainvoke(
        {"problem": PROBLEM, "tests": TESTS}
    )
    synthesis = backend.calls[-1].last_user_content
    assert synthesis.count("no program found") == 2
    assert state["program"] is None
    assert state["verification"] == {
        "program_found": False,
        "passed": 0,
        "total": 3,
        "evidence": "no program found (no ``` code fence in the response)",
        "outcomes": [],
    }


async def test_tests_are_read_from_the_problem_when_not_given():
    problem = (
        "Print the sum of two integers.\n\nSample Input 1\n```\n1 2\n```\nSample Output 1\n```\n3\n```\n\n"
        "Sample Input 2:\n5 7\nSample Output 2:\n12\n"
    )
    backend = FunctionBackend(lambda messages, params: answer(CORRECT, "x"))
    state = await load_graph("pacore-code-verified", backend, schedule=[1]).ainvoke({"problem": problem})
    assert state["verification"]["evidence"] == "passed 2/2 sample tests"
    assert "passed 2/2 sample tests" in backend.calls[-1].last_user_content


def test_sample_tests_from_text():
    text = "Example input\n3\n1 2 3\nExample output\n6\n\nNotes: none."
    assert sample_tests_from_text(text) == [TestCase(input="3\n1 2 3\n", output="6\n")]
    assert sample_tests_from_text("no samples here") == []
    fenced = "Sample Input\n```\n1\n\n2\n```\nSample Output\n```\n3\n```\n"
    assert sample_tests_from_text(fenced) == [TestCase(input="1\n\n2\n", output="3\n")]


async def test_malformed_tests_are_a_config_error():
    backend = FunctionBackend(lambda messages, params: "x")
    with pytest.raises(ConfigError, match="tests must be a list"):
        await load_graph("pacore-code-verified", backend, schedule=[1]).ainvoke(
            {"problem": PROBLEM, "tests": [{"stdin": "1"}]}
        )


def test_the_preset_is_registered():
    spec = load_spec("pacore-code-verified")
    assert spec.type == "code-verified"
    assert list(spec.schedule.rounds) == [4]
    assert any(entry.name == "pacore-code-verified" and entry.error is None for entry in discover_graphs())


def test_evidence_message_format():
    assert evidence_message("code\n\n", "passed 1/1 sample tests") == (
        "code\n\n[Verification of the program above on the sample tests: passed 1/1 sample tests]"
    )


async def test_compaction_event_carries_the_evidence():
    from pacore_graph.events import RoundCompacted, stream_events

    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url) as client:
            graph = load_graph("pacore-code-verified", client, schedule=[3])
            events = [e async for e in stream_events(graph, {"problem": PROBLEM, "tests": TESTS})]
    compacted = [e for e in events if isinstance(e, RoundCompacted)]
    assert len(compacted) == 1
    assert (compacted[0].round, compacted[0].k, compacted[0].kept) == (1, 3, 3)
    assert sum("passed 3/3 sample tests" in m for m in compacted[0].messages) == 1
