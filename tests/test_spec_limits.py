"""Graph specs under attack: YAML alias bombs, oversized or deeply nested documents, and templates that expand
without bound all fail fast with one line, through the real CLI (``pacore graphs show FILE``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pacore_graph.errors import ConfigError
from pacore_graph.graphs import GraphSpecError, parse_spec_text
from pacore_graph.graphs.spec import MAX_SPEC_BYTES
from pacore_graph.prompts import MAX_RENDER_SECONDS, render_references

HEAD = "name: attack\ntype: pacore\nschedule: [4]\n"
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}BODY{% endfor %}{% endfor %}"


def alias_bomb(levels: int) -> str:
    lines = ['    l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"    l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return HEAD + "sampling:\n  extra:\n" + "\n".join(lines) + "\n"


def template_spec(template: str) -> str:
    return HEAD + "prompt:\n  template: " + repr(template).replace("\\'", "''") + "\n"


def show(tmp_path, text: str) -> tuple[int, str, float]:
    """Exit code, stderr and seconds of ``pacore graphs show`` on ``text``; a hang is a failure, not a wait."""
    path = tmp_path / "attack.yaml"
    path.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACORE_")}
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pacore_graph.cli", "graphs", "show", str(path)],
            capture_output=True,
            timeout=40,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading the spec did not finish in 40 s")
    return result.returncode, result.stderr.decode().strip(), time.monotonic() - started


def assert_one_line_refusal(tmp_path, text: str, fragment: str) -> None:
    code, message, _ = show(tmp_path, text)
    assert code == 2, message
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert message.startswith(f"error: {tmp_path / 'attack.yaml'}"), message
    assert fragment in message, message


def test_a_yaml_alias_bomb_fails_fast_with_one_line(tmp_path):
    assert_one_line_refusal(tmp_path, alias_bomb(7), "alias bomb")  # 10**7 strings once expanded


def test_a_modest_alias_bomb_is_refused_before_validation(tmp_path):
    started = time.monotonic()
    with pytest.raises(GraphSpecError, match="expands to more than"):
        parse_spec_text(alias_bomb(6), source="bomb.yaml")
    assert time.monotonic() - started < 1.0


def test_aliases_within_the_limit_still_load():
    text = HEAD + "sampling: &s {temperature: 0.5}\nsynthesis_sampling: *s\n"
    assert parse_spec_text(text, source="ok.yaml").synthesis_params.temperature == 0.5


def test_a_recursive_alias_is_refused():
    with pytest.raises(GraphSpecError, match="refers to a node that contains it"):
        parse_spec_text(HEAD + "description: &d [*d]\n", source="loop.yaml")


def test_an_oversized_document_is_refused(tmp_path):
    assert_one_line_refusal(tmp_path, HEAD + "description: " + "x" * MAX_SPEC_BYTES + "\n", "over the limit")


def test_a_deeply_nested_document_is_refused(tmp_path):
    assert_one_line_refusal(tmp_path, HEAD + "description: " + "[" * 50_000 + "]" * 50_000 + "\n", "nests too deeply")


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        # Loops whose work never reaches the output: only a time bound stops them.
        (LOOPS.replace("BODY", "") + "{{ ref_responses }}", "s to render"),
        ("{% set x %}" + LOOPS.replace("BODY", "a") + "{% endset %}{{ ref_responses }}", "s to render"),
        # One operation that would allocate gigabytes.
        ("{{ 'a' * 6 * 1000 * 1000 * 1000 }}{{ ref_responses }}", "more than"),
        ("{{ ref_responses * 1000000000 }}", "more than"),
        ("{{ 'a'|center(9000000000) }}{{ ref_responses }}", "number over"),
        ("{{ '{:>9000000000}'.format('a') }}{{ ref_responses }}", "width or precision"),
        ("{{ '%9000000000s' % 'a' }}{{ ref_responses }}", "width or precision"),
        ("{% set s = 'a' * 60000 %}{{ s|replace('a', s) }}{{ ref_responses }}", "more than"),
    ],
    ids=["nested-loops", "set-block", "str-mul", "list-mul", "center", "format", "percent", "replace"],
)  # fmt: skip
def test_a_template_that_expands_without_bound_fails_fast_with_one_line(tmp_path, template, fragment):
    code, message, seconds = show(tmp_path, template_spec(template))
    assert code == 2, message
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "prompt.template" in message and fragment in message, message
    assert seconds < 20 + MAX_RENDER_SECONDS


def test_an_output_bomb_at_render_time_is_bounded():
    # Fine on the tiny validation inputs, unbounded on real ones: the bound applies to every rendering.
    template = "{% for r in ref_responses %}{% for c in r %}{% for d in r %}{{ c }}{% endfor %}{% endfor %}{% endfor %}"
    assert render_references("p", ["ab"], template) == "aabb"
    started = time.monotonic()
    with pytest.raises(ConfigError, match="the prompt template"):
        render_references("p", ["x" * 200_000], template)
    assert time.monotonic() - started < MAX_RENDER_SECONDS + 3
