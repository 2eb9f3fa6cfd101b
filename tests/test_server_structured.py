"""Structured output and the parameter table through the proxy: openai / LangChain clients → proxy → fake server."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_type_hints

import aiohttp
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import BaseModel

from pacore_graph import PaCoReConfig, VLLMClient, build_pacore_graph, run_graph
from pacore_graph.errors import ConfigError
from pacore_graph.graphs import discover_graphs
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.server.params import CHAT_PARAMETERS, RESPONSES_PARAMETERS, markdown_table
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

PROBLEM = "What is 17 * 23? Answer in JSON."
MARKER = "Reference Responses:"
JSON_ANSWER = '{"value": 391, "reason": "17 * 23 = 391"}'
README = Path(__file__).parent.parent / "README.md"


class Answer(BaseModel):
    value: int
    reason: str


def is_synthesis(request: FakeRequest) -> bool:
    return MARKER in (request.last_user_content or "")


def json_script(request: FakeRequest) -> FakeReply:
    """Explorers reason in prose; the synthesis (which guided decoding would constrain) answers in JSON."""
    if is_synthesis(request):
        return FakeReply(content=JSON_ANSWER)
    return FakeReply(content=f"<think>work {request.index}</think>it is 391")


@contextlib.asynccontextmanager
async def stack(script: Any = json_script) -> AsyncIterator[tuple[FakeOpenAIServer, PaCoReProxy]]:
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url, max_retries=0) as client:
            async with PaCoReProxy(client, ProxySettings(port=0, shutdown_grace=2.0)) as proxy:
                yield server, proxy


@contextlib.asynccontextmanager
async def openai_client(proxy: PaCoReProxy) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=20)
    try:
        yield client
    finally:
        await client.close()


LOW = {"pacore": {"schedule": 2}}


def synthesis_and_explorers(server: FakeOpenAIServer) -> tuple[list[FakeRequest], list[FakeRequest]]:
    final = [r for r in server.requests if is_synthesis(r)]
    return final, [r for r in server.requests if not is_synthesis(r)]


async def test_openai_parse_constrains_only_the_synthesis_and_the_answer_parses():
    async with stack() as (server, proxy), openai_client(proxy) as client:
        completion = await client.chat.completions.parse(
            model="pacore-low",
            messages=[{"role": "user", "content": PROBLEM}],
            response_format=Answer,
            extra_body=LOW,
        )
    assert completion.choices[0].message.parsed == Answer(value=391, reason="17 * 23 = 391")
    final, explorers = synthesis_and_explorers(server)
    assert len(final) == 1 and len(explorers) == 2
    sent = final[0].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Answer"
    assert sent["json_schema"]["schema"]["required"] == ["value", "reason"]
    assert sent["json_schema"]["strict"] is True
    assert all("response_format" not in r.body for r in explorers)


async def test_json_object_streamed_reaches_the_synthesis():
    async with stack() as (server, proxy), openai_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="pacore-low",
            messages=[{"role": "user", "content": PROBLEM}],
            response_format={"type": "json_object"},
            stream=True,
            extra_body=LOW,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert json.loads(text) == {"value": 391, "reason": "17 * 23 = 391"}
    final, explorers = synthesis_and_explorers(server)
    assert final[0].body["response_format"] == {"type": "json_object"} and final[0].stream
    assert all("response_format" not in r.body for r in explorers)


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
async def test_langchain_with_structured_output(method):
    async with stack() as (server, proxy):
        llm = ChatOpenAI(model="pacore-low", base_url=proxy.base_url, api_key="unused", max_retries=0, extra_body=LOW)
        structured = llm.with_structured_output(Answer, method=method)
        answer = await structured.ainvoke(PROBLEM)
    assert answer == Answer(value=391, reason="17 * 23 = 391")
    final, _ = synthesis_and_explorers(server)
    assert final[0].body["response_format"]["type"] == ("json_schema" if method == "json_schema" else "json_object")


BAD_SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "objekt"}}}


async def test_invalid_json_schema_is_a_400_before_anything_is_sent():
    async with stack() as (server, proxy), openai_client(proxy) as client:
        with pytest.raises(openai.BadRequestError, match=r"not a valid JSON schema: 'objekt' is not valid"):
            await client.chat.completions.create(
                model="pacore-low", messages=[{"role": "user", "content": PROBLEM}], response_format=BAD_SCHEMA
            )
        with pytest.raises(openai.BadRequestError, match="give json_schema with type 'json_schema'"):
            await client.chat.completions.create(
                model="pacore-low",
                messages=[{"role": "user", "content": PROBLEM}],
                response_format={"type": "json_schema"},
            )
    assert server.requests == []


async def test_python_response_format_through_with_overrides():
    async with FakeOpenAIServer(json_script) as server:
        async with VLLMClient(server.base_url, max_retries=0) as client:
            config = PaCoReConfig().with_overrides(schedule=[2], response_format=Answer)
            result = await run_graph(build_pacore_graph(client, config=config), {"problem": PROBLEM})
    assert Answer.model_validate_json(result.answer).value == 391
    final, explorers = synthesis_and_explorers(server)
    assert final[0].body["response_format"]["json_schema"]["name"] == "Answer"
    assert all("response_format" not in r.body for r in explorers)


def test_python_invalid_schema_and_voting_graph_are_config_errors():
    with pytest.raises(ConfigError, match=r"invalid option response_format=.*not a valid JSON schema"):
        PaCoReConfig().with_overrides(response_format=BAD_SCHEMA)
    voting = next(e.spec for e in discover_graphs() if e.name == "self-consistency")
    assert voting is not None
    with pytest.raises(ConfigError, match=r"self-consistency .* cannot give a structured answer"):
        voting.with_overrides(response_format={"type": "json_object"})


# -- the parameter table -----------------------------------------------------------------------------------


def test_every_openai_sdk_parameter_has_a_row():
    chat = set(get_type_hints(CompletionCreateParamsBase)) | {"stream"}
    responses = set(get_type_hints(ResponseCreateParamsBase)) | {"stream"}
    assert chat - set(CHAT_PARAMETERS) == set()
    assert responses - set(RESPONSES_PARAMETERS) == set()
    # tools are the tool-call support's: marked so, never refused here
    for table in (CHAT_PARAMETERS, RESPONSES_PARAMETERS):
        assert {name for name, p in table.items() if p.handling == "tools"} == {
            "tools",
            "tool_choice",
            "parallel_tool_calls",
        }


def test_readme_shows_the_tables():
    readme = README.read_text(encoding="utf-8")
    assert markdown_table(CHAT_PARAMETERS) in readme
    assert markdown_table(RESPONSES_PARAMETERS) in readme


async def test_penalties_seed_and_stop_reach_every_round():
    async with stack() as (server, proxy), openai_client(proxy) as client:
        await client.chat.completions.create(
            model="pacore-low",
            messages=[{"role": "user", "content": PROBLEM}],
            presence_penalty=0.5,
            frequency_penalty=-0.25,
            seed=7,
            stop=["STOP"],
            user="someone",
            metadata={"k": "v"},
            extra_body=LOW,
        )
    assert len(server.requests) == 3
    for r in server.requests:
        assert (r.body["presence_penalty"], r.body["frequency_penalty"], r.body["stop"]) == (0.5, -0.25, ["STOP"])
        assert "user" not in r.body and "metadata" not in r.body
    assert sorted(r.body["seed"] for r in server.requests) == [7, 8, 9]


async def test_reasoning_effort_picks_the_schedule_preset():
    async with stack() as (server, proxy), openai_client(proxy) as client:
        completion = await client.chat.completions.create(
            model="pacore-high", messages=[{"role": "user", "content": PROBLEM}], reasoning_effort="low"
        )
        assert completion.model_extra["pacore"]["schedule"] == [4]
        assert len(server.requests) == 5
        with pytest.raises(
            openai.BadRequestError, match=r"reasoning_effort='minimal' is not supported.*'low' \(\[4\]\)"
        ):
            await client.chat.completions.create(
                model="pacore-low", messages=[{"role": "user", "content": PROBLEM}], reasoning_effort="minimal"
            )
        with pytest.raises(openai.BadRequestError, match=r"give one of reasoning_effort and pacore\.schedule"):
            await client.chat.completions.create(
                model="pacore-low",
                messages=[{"role": "user", "content": PROBLEM}],
                reasoning_effort="high",
                extra_body=LOW,
            )
    assert len(server.requests) == 5


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"logprobs": True}, "logprobs=True is not supported"),
        ({"logprobs": True, "top_logprobs": 3}, "top_logprobs=3 is not supported"),
        ({"n": 3}, "n=3 is not supported"),
        ({"logit_bias": {"42": 5}}, "logit_bias="),
        ({"store": True}, "store=True is not supported"),
        ({"modalities": ["text", "audio"]}, "modalities="),
        ({"service_tier": "priority"}, "service_tier='priority'"),
        ({"verbosity": "low"}, "verbosity='low'"),
        ({"functions": [{"name": "f"}]}, "functions="),
        ({"web_search_options": {}}, "web_search_options="),
        ({"top_k": 5, "min_p": 0.1}, "unknown parameters 'top_k', 'min_p'"),
    ],
)
async def test_refused_parameters_are_a_400_that_names_them(extra, fragment):
    async with stack() as (server, proxy):
        body = {"model": "pacore-low", "messages": [{"role": "user", "content": PROBLEM}], **extra}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                status, error = response.status, (await response.json())["error"]
    assert status == 400
    assert fragment in error["message"]
    assert server.requests == []


async def test_values_that_change_nothing_pass():
    async with stack() as (server, proxy):
        body = {
            "model": "pacore-low",
            "messages": [{"role": "user", "content": PROBLEM}],
            "logprobs": False,
            "n": 1,
            "store": False,
            "modalities": ["text"],
            "service_tier": "auto",
            "response_format": {"type": "text"},
            "pacore": {"schedule": 1},
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                assert response.status == 200, await response.text()
    assert all("response_format" not in r.body for r in server.requests)


@pytest.mark.parametrize("section", ["Structured output", "OpenAI parameters", "The Responses API"])
def test_readme_snippets_run(section):
    """Each section's Python snippet, run as written (they serve a fake upstream through the proxy)."""
    readme = README.read_text(encoding="utf-8")
    text = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(code) == 1, f"the {section} section has one python snippet"
    exec(compile(code[0], f"README.md ({section})", "exec"), {"__name__": "readme"})
