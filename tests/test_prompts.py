import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from pacore_graph import REFERENCE_TEMPLATE, ConfigError, build_prompt, normalize_problem, render_references

GOLDEN = (
    "You are given a problem and a list of reference responses. Your job is to analyze these references and "
    "provide your own response.\n\nOriginal Problem:\nQ\n\nReference Responses:\n\nReference 1:\nA: 2\n\n"
    "Reference 2:\nB: 3\n\n\nNow, based on the original problem and reference responses above, please provide "
    "your own comprehensive solution."
)


def test_template_matches_the_golden_output_byte_for_byte():
    assert render_references("Q", ["A: 2", "B: 3"]) == GOLDEN


def test_template_text_is_the_trained_one():
    assert REFERENCE_TEMPLATE.startswith("You are given a problem and a list of reference responses.")
    assert REFERENCE_TEMPLATE.endswith("please provide your own comprehensive solution.\n")


def test_round_one_sends_the_original_messages_unchanged():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q"}]
    assert build_prompt(messages, []) == messages


def test_later_rounds_replace_only_the_last_user_message():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "Q"},
    ]
    prompt = build_prompt(messages, ["A: 2", "B: 3"])
    assert prompt[:3] == messages[:3]
    assert prompt[3] == {"role": "user", "content": GOLDEN}
    assert messages[3]["content"] == "Q", "the caller's messages must not be mutated"


def test_a_string_problem_becomes_one_user_message():
    assert normalize_problem("What is 2+2?") == [{"role": "user", "content": "What is 2+2?"}]


def test_langchain_messages_are_accepted():
    messages = normalize_problem([SystemMessage("sys"), HumanMessage("hi"), AIMessage("yo"), HumanMessage("Q")])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert build_prompt(messages, ["A: 2", "B: 3"])[-1]["content"] == GOLDEN


@pytest.mark.parametrize(
    "problem",
    [
        "",
        "   \n",
        [],
        [{"role": "system", "content": "only a system turn"}],
        [{"role": "user", "content": " "}],
        [{"content": "no role"}],
    ],
)
def test_bad_problems_raise_config_errors(problem):
    with pytest.raises(ConfigError):
        normalize_problem(problem)


def test_custom_templates_are_sandboxed_and_errors_are_config_errors():
    assert render_references("Q", ["a"], "{{ original_prompt }}|{{ ref_responses|length }}") == "Q|1"
    with pytest.raises(ConfigError, match="jinja2"):
        render_references("Q", [], "{% for %}")
    with pytest.raises(ConfigError):
        render_references("Q", [], "{{ ''.__class__.__mro__[1].__subclasses__() }}")


async def test_text_parts_are_joined_with_a_newline_in_every_later_round_as_vllm_joins_them():
    """vLLM joins a message's text parts with "\\n" in round 1; rounds 2.. and the synthesis quote the same text."""
    from pacore_graph import build_pacore_graph, run_graph
    from pacore_graph.testing import FunctionBackend

    backend = FunctionBackend(lambda messages, params: "<think>x</think>391")
    parts = [{"type": "text", "text": "Compute 17 * 23."}, {"type": "text", "text": "Give the number only."}]
    await run_graph(build_pacore_graph(backend, "2,2"), {"messages": [{"role": "user", "content": parts}]})
    first, later = backend.calls[:2], backend.calls[2:]
    from pacore_graph.messages import text_of

    # round 1: the text vLLM sees, its parts joined by a newline
    assert [text_of(call.messages[-1]["content"]) for call in first] == ["Compute 17 * 23.\nGive the number only."] * 2
    assert len(later) == 3  # round 2 and the synthesis
    for call in later:
        content = call.messages[-1]["content"]
        assert isinstance(content, str)  # a text-only message stays a plain string
        assert "Original Problem:\nCompute 17 * 23.\nGive the number only.\n\nReference Responses:" in content
