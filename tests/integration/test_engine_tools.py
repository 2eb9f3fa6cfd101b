"""Tool calls on the real embedded engine: an agent loop through the proxy over vLLM (served by the launcher with
``--enable-auto-tool-choice --tool-call-parser hermes``). SmolLM2-135M is too weak to decide on a call by itself,
so the first turn names the tool (``tool_choice``: vLLM then constrains the output to a call of it); the second
turn, with the tool's result, must answer in text."""

from __future__ import annotations

import openai
import pytest

from pacore_graph import VLLMClient
from pacore_graph.engine import EngineProcess
from pacore_graph.server import PaCoReProxy, ProxySettings

pytestmark = pytest.mark.engine

LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_code",
        "description": "The access code of a person.",
        "parameters": {"type": "object", "properties": {"person": {"type": "string"}}, "required": ["person"]},
    },
}


async def test_an_agent_loop_through_pacore_on_the_engine_calls_the_tool_then_answers(engine: EngineProcess) -> None:
    async with (
        VLLMClient(engine.base_url, model=engine.model, max_retries=0) as upstream,
        PaCoReProxy(upstream, ProxySettings(port=0, shutdown_grace=2.0)) as proxy,
    ):
        client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=600)
        try:
            messages: list[dict] = [{"role": "user", "content": "What is Ada's access code? Use the tool."}]
            options = {
                "pacore": {"schedule": "2", "max_tokens": 96, "temperature": 0.7, "seed": 1, "truncated": "keep"}
            }
            first = await client.chat.completions.create(
                model="pacore-low",
                messages=messages,
                tools=[LOOKUP],
                tool_choice={"type": "function", "function": {"name": "lookup_code"}},
                extra_body=options,
            )
            choice = first.choices[0]
            assert choice.finish_reason == "tool_calls", choice
            (call,) = choice.message.tool_calls[:1]
            assert call.function.name == "lookup_code"
            # The arguments are the model's text as vLLM's parser returned it: the 135M model, cut at max_tokens,
            # does not always write the schema's object (seen: a JSON array, an unterminated string)
            assert isinstance(call.function.arguments, str)
            messages += [
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "7F3K-QX"},
            ]
            second = await client.chat.completions.create(
                model="pacore-low", messages=messages, tools=[LOOKUP], tool_choice="none", extra_body=options
            )
        finally:
            await client.close()
    answer = second.choices[0]
    assert answer.finish_reason in ("stop", "length")
    assert answer.message.tool_calls is None
    assert (answer.message.content or "").strip()
