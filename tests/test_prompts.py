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
