"""litellm and the ``llm`` CLI against the proxy (real HTTP, fake upstream): plain, streamed, and structured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from pydantic import BaseModel

from pacore_graph import VLLMClient
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest

PROBLEM = "What is 17 * 23?"
ANSWER = "The final answer is 391."
MARKER = "Reference Responses:"


class Answer(BaseModel):
    value: int


def script(request: FakeRequest) -> FakeReply:
    if MARKER not in (request.last_user_content or ""):
        return FakeReply(content=f"<think>work</think>conclusion {request.index}: 391")
    if "response_format" in request.body:
        return FakeReply(content='{"value": 391}')
    return FakeReply(content=f"<think>weighing</think>{ANSWER}")


@contextlib.asynccontextmanager
async def stack(paths: list[str] | None = None) -> AsyncIterator[tuple[FakeOpenAIServer, PaCoReProxy]]:
    """The fake upstream and the proxy; ``paths`` collects the path of every request the proxy answers."""
    async with FakeOpenAIServer(script) as server:
        async with VLLMClient(server.base_url, max_retries=0) as upstream:
            proxy = PaCoReProxy(upstream, ProxySettings(port=0, shutdown_grace=2.0))
            if paths is not None:

                async def record(request: web.Request, response: web.StreamResponse) -> None:
                    paths.append(request.path)

                proxy.app.on_response_prepare.append(record)
            async with proxy:
                yield server, proxy


def synthesis(server: FakeOpenAIServer) -> FakeRequest:
    """The last synthesis request."""
    return [r for r in server.requests if MARKER in (r.last_user_content or "")][-1]


# -- litellm -------------------------------------------------------------------------------------------------


@pytest.fixture
def litellm(monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list at import
    import litellm

    return litellm


async def test_litellm_plain_streamed_and_response_format(litellm):
    async with stack() as (server, proxy):
        common = {"model": "openai/pacore-low", "api_base": proxy.base_url, "api_key": "unused"}
        extra = {"extra_body": {"pacore": {"schedule": 2}}}
        plain = await litellm.acompletion(messages=[{"role": "user", "content": PROBLEM}], **common, **extra)
        stream = await litellm.acompletion(
            messages=[{"role": "user", "content": PROBLEM}], stream=True, **common, **extra
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
        structured = await litellm.acompletion(
            messages=[{"role": "user", "content": PROBLEM}], response_format=Answer, **common, **extra
        )
        with pytest.raises(litellm.BadRequestError, match="logprobs=True is not supported"):
            await litellm.acompletion(messages=[{"role": "user", "content": PROBLEM}], logprobs=True, **common)
    assert plain.choices[0].message.content == ANSWER
    assert "".join(pieces) == ANSWER
    assert Answer.model_validate_json(structured.choices[0].message.content) == Answer(value=391)
    assert synthesis(server).body["response_format"]["json_schema"]["name"] == "Answer"


# -- the llm CLI ---------------------------------------------------------------------------------------------


async def run_llm(user_dir: Path, *args: str) -> str:
    """``llm ARGS`` in a subprocess (the proxy keeps serving on this loop), with its config in ``user_dir``."""
    env = {
        **os.environ,
        "LLM_USER_PATH": str(user_dir),
        "OPENAI_API_KEY": "unused",
        "LLM_LOAD_PLUGINS": "",  # only llm's own OpenAI plugin (the engine's model package is a plugin too)
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llm",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


def llm_config(user_dir: Path, proxy: PaCoReProxy) -> None:
    models = [
        {"model_id": "pacore", "model_name": "pacore-low", "api_base": proxy.base_url, "supports_schema": True},
        {
            "model_id": "pacore-responses",
            "model_name": "pacore-low",
            "api_base": proxy.base_url,
            "supports_schema": True,
            "responses": True,
        },
    ]
    (user_dir / "extra-openai-models.yaml").write_text(yaml.safe_dump(models), encoding="utf-8")


@pytest.mark.parametrize("model", ["pacore", "pacore-responses"])
async def test_llm_cli_plain_streamed_and_schema(tmp_path, model):
    paths: list[str] = []
    async with stack(paths) as (server, proxy):
        llm_config(tmp_path, proxy)
        streamed = await run_llm(tmp_path, "-m", model, PROBLEM)
        plain = await run_llm(tmp_path, "-m", model, "--no-stream", PROBLEM)
        structured = await run_llm(tmp_path, "-m", model, "--schema", "value int", PROBLEM)
    assert streamed == plain == ANSWER
    assert json.loads(structured) == {"value": 391}
    assert set(paths) == {"/v1/responses" if model == "pacore-responses" else "/v1/chat/completions"}
    sent = synthesis(server).body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["properties"]["value"]["type"] == "integer"
