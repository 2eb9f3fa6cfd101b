import random
import re

import pytest

from pacore_graph import CompactionPolicy, compact, conclusion_of
from pacore_graph.compaction import ConclusionStream, is_cut_mid_thought


def trajectory(index, content, finish_reason="stop", reasoning=None):
    return {
        "round": 1,
        "index": index,
        "conclusion": conclusion_of(content),
        "content_chars": len(content),
        "finish_reason": finish_reason,
        "cut_mid_thought": is_cut_mid_thought(content, reasoning, finish_reason),
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "seconds": 0.0,
        "started_at": 0.0,
    }


def test_conclusion_is_the_text_after_the_last_think_close():
    assert conclusion_of("<think>a</think>mid</think> final") == " final"
    assert conclusion_of("no thinking at all") == "no thinking at all"
    assert conclusion_of("<think>only thinking</think>") == ""


def test_cut_mid_thought_detection():
    assert is_cut_mid_thought("<think>still going", None, "length")
    assert is_cut_mid_thought("still going", None, "length")
    assert not is_cut_mid_thought("<think>x</think> partial answ", None, "length")
    assert not is_cut_mid_thought("still going", None, "stop")
    # With a separate reasoning field, content is the conclusion: empty content means no conclusion yet.
    assert is_cut_mid_thought("", "thinking...", "length")
    assert not is_cut_mid_thought("partial answ", "thinking...", "length")


def test_empty_conclusions_are_dropped_and_counted():
    result = compact([trajectory(0, "<think>x</think>  "), trajectory(1, "<think>y</think>4"), trajectory(2, "")])
    assert result.messages == ["4"]
    assert result.dropped_empty == 2
    assert result.dropped_truncated == 0


def test_truncated_policy_drop_and_keep():
    items = [trajectory(0, "<think>long unfinished", "length"), trajectory(1, "<think>y</think>4")]
    dropped = compact(items)
    assert dropped.messages == ["4"]
    assert dropped.dropped_truncated == 1
    kept = compact(items, CompactionPolicy(truncated="keep"))
    assert sorted(kept.messages) == ["4", "<think>long unfinished"]
    assert kept.dropped_truncated == 0


def test_order_is_the_reference_order_and_independent_of_arrival():
    contents = [f"<think>{'x' * i}</think>answer {i}" for i in (5, 1, 9, 3, 7)]
    items = [trajectory(i, c) for i, c in enumerate(contents)]
    expected = sorted(items, key=lambda t: t["content_chars"])
    random.Random(42).shuffle(expected)
    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    assert compact(shuffled).messages == [t["conclusion"] for t in expected]
    assert compact(items).messages == compact(shuffled).messages


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_order_seed_is_configurable(seed):
    items = [trajectory(i, f"answer {'y' * i}") for i in range(6)]
    expected = sorted(items, key=lambda t: t["content_chars"])
    random.Random(seed).shuffle(expected)
    assert compact(items, CompactionPolicy(order_seed=seed)).messages == [t["conclusion"] for t in expected]


@pytest.mark.parametrize(
    ("pieces", "answer", "live"),
    [
        # Thinking inline: nothing is sent until </think> (split across pieces), then the conclusion streams.
        (["<thi", "nk>step one", " step two</th", "ink>\n\nThe ans", "wer is 4."], "\n\nThe answer is 4.", 2),
        # No thinking in the content (a reasoning parser split it off): every piece is sent at once.
        (["The ", "answer ", "is 4."], "The answer is 4.", 3),
        # Thinking that never closes: the content is the conclusion, sent whole at the end.
        (["<think>cut off", " mid-thought"], "<think>cut off mid-thought", 0),
    ],
)
def test_conclusion_stream_holds_back_thinking(pieces, answer, live):
    conclusion = ConclusionStream()
    sent = [conclusion.feed(piece) for piece in pieces]
    assert len([s for s in sent if s]) == live
    assert "".join(sent) + conclusion.finish(answer) == answer


# -- compaction empty="keep": the prompt laid out exactly as the authors' code lays it out ----------------------------

#: The reference template of /work/shared/pacore-spec.md, rendered as the authors' code renders it (jinja2's default
#: Template), over their reference list: every response's conclusion, an empty one as "" and a failed request as an
#: empty placeholder, sorted by content length, then shuffled with random.Random(42).
OFFICIAL_TEMPLATE = """You are given a problem and a list of reference responses. Your job is to analyze these \
references and provide your own response.

Original Problem:
{{ original_prompt }}

Reference Responses:
{% for response in ref_responses %}
Reference {{ loop.index }}:
{{ response }}
{% endfor %}

Now, based on the original problem and reference responses above, please provide your own comprehensive solution."""

#: Round 1 of K = 5 by seed: two with conclusions, two with empty conclusions, and seed 3's request fails.
ROUND_ONE = {0: "<think>a</think>A: 391", 1: "<think>long thinking</think>", 2: "B: 390", 4: "<think>x</think>  "}


def official_prompt(problem: str, contents: dict[int, str], k: int) -> str:
    import jinja2

    responses = [contents.get(i, "") for i in range(k)]  # a failed request: an empty placeholder
    responses.sort(key=len)
    random.Random(42).shuffle(responses)
    conclusions = [r.rpartition("</think>")[2] if "</think>" in r else r for r in responses]
    return jinja2.Template(OFFICIAL_TEMPLATE).render(original_prompt=problem, ref_responses=conclusions)


def round_one_backend():
    from pacore_graph import UpstreamError
    from pacore_graph.testing import FunctionBackend

    def reply(messages, params):
        if "Reference Responses" in messages[-1]["content"]:
            return "The answer is 391."
        if params.seed == 3:
            raise UpstreamError("HTTP 500 from the model server", status=500, body="boom")
        return ROUND_ONE[params.seed]

    return FunctionBackend(reply)


async def test_empty_keep_lays_the_prompt_out_as_the_authors_code_does():
    from pacore_graph import PaCoReConfig, build_pacore_graph, run_graph

    backend = round_one_backend()
    config = PaCoReConfig().with_overrides(schedule=[5], seed=0, min_trajectories=4, empty="keep")
    result = await run_graph(build_pacore_graph(backend, config=config), {"problem": "What is 17 * 23?"})
    synthesis = backend.calls[-1].last_user_content
    assert synthesis == official_prompt("What is 17 * 23?", ROUND_ONE, 5)
    assert [line for line in synthesis.split("\n") if re.fullmatch(r"Reference \d+:", line)] == [
        f"Reference {n}:" for n in range(1, 6)
    ]
    assert "Reference 5:" in synthesis and synthesis.count(":\n\n\n") + synthesis.count(":\n  \n") >= 2  # blanks
    row = result.rounds[0]
    assert (row.k, row.returned, row.messages, row.dropped_empty, row.failed) == (5, 4, 5, 0, 1)


async def test_by_default_empty_conclusions_and_failures_are_dropped_and_the_rest_renumbered():
    from pacore_graph import PaCoReConfig, build_pacore_graph, run_graph

    backend = round_one_backend()
    config = PaCoReConfig().with_overrides(schedule=[5], seed=0, min_trajectories=4)
    result = await run_graph(build_pacore_graph(backend, config=config), {"problem": "What is 17 * 23?"})
    synthesis = backend.calls[-1].last_user_content
    assert synthesis != official_prompt("What is 17 * 23?", ROUND_ONE, 5)
    assert "Reference 2:" in synthesis and "Reference 3:" not in synthesis  # two left, numbered 1 and 2
    assert {"A: 391", "B: 390"} <= set(synthesis.split("\n"))
    row = result.rounds[0]
    assert (row.returned, row.messages, row.dropped_empty, row.failed) == (4, 2, 2, 1)


def test_empty_keep_is_an_option_of_every_face():
    from typer.testing import CliRunner

    from pacore_graph import ConfigError, PaCoReConfig
    from pacore_graph.cli.main import app
    from pacore_graph.graphs import parse_spec
    from pacore_graph.server.protocol import PaCoReOptions

    assert PaCoReConfig().compaction.empty == "drop"
    assert PaCoReConfig().with_overrides(empty="keep").compaction.empty == "keep"
    assert (
        parse_spec(
            {"name": "x", "type": "pacore", "schedule": [2], "compaction": {"empty": "keep"}}, source="x.yaml"
        ).compaction.empty
        == "keep"
    )
    assert PaCoReOptions(empty="keep").given() == {"empty": "keep"}
    with pytest.raises(ConfigError, match="invalid option empty='maybe': use 'drop' or 'keep'"):
        PaCoReConfig().with_overrides(empty="maybe")
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "--empty" in help_text


async def test_an_all_empty_round_still_fails_with_empty_keep():
    from pacore_graph import EmptyRoundError, PaCoReConfig, build_pacore_graph, run_graph
    from pacore_graph.testing import FunctionBackend

    backend = FunctionBackend(lambda messages, params: "<think>nothing to say</think>")
    config = PaCoReConfig().with_overrides(schedule=[3], empty="keep")
    with pytest.raises(EmptyRoundError):
        await run_graph(build_pacore_graph(backend, config=config), {"problem": "Q"})
