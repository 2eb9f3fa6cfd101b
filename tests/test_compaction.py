import random

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
