import pytest
from pydantic import ValidationError

from pacore_graph import ExtractionPolicy, extract_answer, extract_boxed, majority_vote, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{391}.", "391"),
        (r"first \boxed{1}, then on reflection \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left\{ x : x^{2} = 1 \right\}}", r"\left\{ x : x^{2} = 1 \right\}"),
        (r"\boxed {42}", "42"),
        (r"\boxed{ 7 }", "7"),
    ],
)
def test_the_last_boxed_answer_with_nested_braces(text, expected):
    assert extract_boxed(text) == expected
    assert extract_answer(text) == expected


def test_an_unfinished_box_falls_back_to_the_last_complete_one():
    assert extract_boxed(r"\boxed{5} and then \boxed{\frac{1}{") == "5"
    assert extract_boxed(r"cut off \boxed{\frac{1}{") is None


def test_no_answer_is_none_not_an_empty_string():
    assert extract_answer("I could not solve it.") is None
    assert extract_answer("") is None
    assert extract_answer(None) is None
    assert extract_answer(r"\boxed{}") is None
    assert extract_answer("The answer is .") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Adding up, the answer is 391.", "391"),
        ("The answer is: $x = 2$.", "x = 2"),
        ("**Final answer:** 17\nThanks!", "17"),
        ("The answer is 3.\nWait, recheck. The final answer is 4.", "4"),
    ],
)
def test_fallback_phrases(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer to the problem is 12.", "12"),
        ("So the final answer to this question is **391**.", "391"),
        ("The answer to your question is: $x = 2$.", "x = 2"),
        ("Thinking aloud.\nThe answer to the puzzle is 7\n", "7"),
    ],
)
def test_the_answer_to_the_problem_is(text, expected):
    assert extract_answer(text) == expected


def test_an_answer_to_anything_else_is_not_read_as_one():
    assert extract_answer("The answer to this depends on x.") is None
    assert extract_answer("The answer to 3 + 4 is unclear.") is None  # no fixed object: not the phrase


def test_boxed_wins_over_the_fallback_and_fallbacks_are_configurable():
    assert extract_answer(r"The answer is 3. \boxed{4}") == "4"
    custom = ExtractionPolicy(boxed=False, fallback=(r"ANSWER=(\w+)",))
    assert extract_answer(r"\boxed{4} ANSWER=five", custom) == "five"
    assert extract_answer("The answer is 3.", ExtractionPolicy(fallback=())) is None


def test_bad_fallback_patterns_are_rejected():
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        ExtractionPolicy(fallback=("answer is (",))
    with pytest.raises(ValidationError, match="needs a group"):
        ExtractionPolicy(fallback=("answer is .+",))


def test_normalization_joins_equivalent_spellings():
    assert normalize_answer(" $391$ ") == normalize_answer("391.") == "391"
    assert normalize_answer("x  =  2") == "x = 2"


def test_majority_vote_counts_normalized_answers_and_abstentions():
    vote = majority_vote(["391", None, "$391$", "390", "391.", None])
    assert vote.answer == "391"
    assert vote.tally == {"391": 3, "390": 1}
    assert list(vote.tally) == ["391", "390"]
    assert vote.winner_index == 0
    assert vote.abstained == 2


def test_a_tie_goes_to_the_answer_that_got_there_first():
    assert majority_vote(["a", "b", "b", "a"]).answer == "b"  # b reached 2 votes first
    assert majority_vote(["a", "b"]).answer == "a"
    vote = majority_vote(["x", "y", "y"])
    assert (vote.answer, vote.winner_index) == ("y", 1)


def test_nobody_answered():
    vote = majority_vote([None, None])
    assert vote.answer is None and vote.winner_index is None
    assert vote.tally == {} and vote.abstained == 2
