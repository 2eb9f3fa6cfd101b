"""Structured output on the real engine: the proxy sends ``response_format`` on the synthesis only, and vLLM's
guided decoding makes even SmolLM2-135M's answer parse."""

from __future__ import annotations

import openai
import pytest
from pydantic import BaseModel

from pacore_graph.engine import EngineProcess
from pacore_graph.server import PaCoReProxy, ProxySettings

pytestmark = pytest.mark.engine


class Answer(BaseModel):
    value: int


async def test_parse_through_the_proxy_gives_a_parsed_answer(engine: EngineProcess) -> None:
    async with engine.client(max_concurrency=4) as backend, PaCoReProxy(backend, ProxySettings(port=0)) as proxy:
        async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=300) as client:
            completion = await client.chat.completions.parse(
                model="pacore-low",
                messages=[{"role": "user", "content": "What is 2 + 3? Answer in JSON with the key value."}],
                response_format=Answer,
                max_tokens=48,
                temperature=0,
                # explorers cut at 48 tokens are still references; only the synthesis is constrained
                extra_body={"pacore": {"schedule": [2], "truncated": "keep"}},
            )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer), completion.choices[0].message.content
