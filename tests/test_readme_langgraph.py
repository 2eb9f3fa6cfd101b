"""The README's "LangGraph streaming and Studio" snippets run, against the fake server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pacore_graph import VLLMClient
from pacore_graph.bridge import run_sync
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

README = Path(__file__).resolve().parent.parent / "README.md"
ANSWER = "It is 391."


def _section_snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## LangGraph streaming and Studio\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def script(request: FakeRequest) -> FakeReply:
    if "Reference Responses" in (request.last_user_content or ""):
        return FakeReply(content=ANSWER, reasoning="never shown")
    return FakeReply(content="draft 391")


def test_the_section_has_its_snippets():
    assert len(_section_snippets()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_readme_snippet_runs(index, capsys):
    snippet = _section_snippets()[index]
    with FakeOpenAIServer(script).in_thread() as server:
        namespace: dict[str, object] = {"__name__": "readme_snippet"}
        exec(compile(snippet.replace("http://127.0.0.1:8000/v1", server.base_url), "README.md", "exec"), namespace)
        client = namespace.get("client")
        if isinstance(client, VLLMClient):  # the sync snippet leaves its client open, as a script may
            run_sync(client.aclose())
        requests = list(server.requests)
    out = capsys.readouterr().out
    if index == 0:
        assert out.splitlines() == [ANSWER, ANSWER]  # two streams, the answer's tokens only
    else:
        assert out.startswith(ANSWER)
        assert "'input_tokens'" in out
        second_turn = requests[-9:]  # schedule 8 then the synthesis: 9 requests
        assert [m["content"] for m in second_turn[0].messages] == ["What is 17 * 23?", ANSWER, "And 17 * 24?"]
        assert len(requests) == 4 + 1 + 8 + 1
