"""Multimodal PaCoRe (issue 21): images kept in every round, from every entry point, by real HTTP to the fake server."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from pathlib import Path

import aiohttp
import pytest
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from pacore_graph import (
    ConfigError,
    ContextBudgetError,
    PaCoReConfig,
    RequestTooLargeError,
    RoundStarted,
    SamplingParams,
    VLLMClient,
    build_pacore_graph,
    build_prompt,
    image_part,
    normalize_problem,
    record_run,
    render_references,
    run_graph,
    stream_run,
)
from pacore_graph.budget import MEDIA_PART_TOKENS, count_tokens, estimate_tokens, fit_prompt
from pacore_graph.cli.main import app
from pacore_graph.eval.datasets import DatasetError, load_dataset
from pacore_graph.media import parse_data_url, sniff_image_type
from pacore_graph.server import PaCoReProxy, ProxySettings
from pacore_graph.testing import FakeOpenAIServer, FakeReply, FakeRequest, FunctionBackend
from pacore_graph.trace import Trace, TraceGraph, TraceMedia
from pacore_graph.viz.html import render_trace_html

FIXTURE = Path(__file__).parent / "fixtures" / "small.png"
PNG = FIXTURE.read_bytes()
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
QUESTION = "What is in this picture?"


def image() -> dict:
    return {"type": "image_url", "image_url": {"url": PNG_URL}}


def problem() -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": QUESTION}, image()]}]


def script(request: FakeRequest) -> FakeReply:
    return FakeReply(content=f"<think>looking {request.index}</think>a gradient {'x' * (request.index % 3)}")


def reference_order(indices: list[int]) -> list[str]:
    """The spec's order of the conclusions of requests ``indices``: by content length, then Random(42)."""
    pairs = [(f"a gradient {'x' * (i % 3)}", script(FakeRequest("", {}, {}, i)).content) for i in indices]
    ordered = sorted(pairs, key=lambda pair: len(pair[1]))
    random.Random(42).shuffle(ordered)
    return [conclusion for conclusion, _ in ordered]


def run_cli(*args: str):
    return CliRunner().invoke(app, ["run", *args], catch_exceptions=False)


# --- P(x, M) ---------------------------------------------------------------------------------------------------


def test_later_rounds_put_the_template_text_first_then_every_non_text_part_in_order():
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    video = {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}}
    picture = image()
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Look:"}, picture, audio, {"type": "text", "text": "Why?"}, video],
        },
    ]
    assert build_prompt(messages, []) == messages
    prompt = build_prompt(messages, ["A: 2", "B: 3"])
    assert prompt[0] == messages[0]
    text, *rest = prompt[1]["content"]
    assert text == {"type": "text", "text": render_references("Look:\nWhy?", ["A: 2", "B: 3"])}
    assert rest == [picture, audio, video] and rest[0] is picture  # the same objects, in their order
    assert messages[1]["content"][0] == {"type": "text", "text": "Look:"}, "the caller's messages are not mutated"


def test_text_only_content_parts_still_become_one_string():
    messages = [{"role": "user", "content": [{"type": "text", "text": "Q"}]}]
    assert build_prompt(messages, ["A: 2"])[-1]["content"] == render_references("Q", ["A: 2"])


def test_langchain_image_blocks_and_openai_dicts_are_accepted():
    from_langchain = normalize_problem(
        [
            HumanMessage(
                content=[
                    {"type": "text", "text": QUESTION},
                    {"type": "image", "base64": base64.b64encode(PNG).decode(), "mime_type": "image/png"},
                ]
            )
        ]
    )
    assert from_langchain == problem()
    assert normalize_problem(problem()) == problem()


@pytest.mark.parametrize(
    "content",
    [[image()], [{"type": "text", "text": " "}, image()], [{"text": "no type"}, image()], ["a bare string"]],
)
def test_a_multimodal_problem_needs_text_and_typed_parts(content):
    with pytest.raises(ConfigError):
        normalize_problem([{"role": "user", "content": content}])


# --- the acceptance run: schedule 3,2 through real HTTP ---------------------------------------------------------


async def test_schedule_3_2_keeps_the_image_byte_identical_in_all_six_requests():
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        result = await run_graph(build_pacore_graph(client, "3,2"), {"messages": problem()})
        requests = list(server.requests)
    assert len(requests) == 6 and result.answer
    original = json.dumps(image())
    for request in requests[:3]:
        assert request.messages == problem()
    expected_round2 = render_references(QUESTION, reference_order([0, 1, 2]))
    expected_final = render_references(QUESTION, reference_order([3, 4]))
    for request, text in [
        (requests[3], expected_round2),
        (requests[4], expected_round2),
        (requests[5], expected_final),
    ]:
        assert request.messages == [{"role": "user", "content": [{"type": "text", "text": text}, image()]}]
    for request in requests:
        assert json.dumps(request.messages[-1]["content"][-1]) == original  # byte-identical
        assert json.dumps(request.body).count(base64.b64encode(PNG).decode()) == 1  # sent once per request


async def test_the_proxy_takes_an_image_part_and_keeps_it_in_every_round():
    settings = ProxySettings(port=0, shutdown_grace=2.0)
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        async with PaCoReProxy(client, settings) as proxy, aiohttp.ClientSession() as http:
            body = {"model": "pacore-low", "messages": problem(), "pacore": {"schedule": "2"}}
            async with http.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
        requests = list(server.requests)
    assert answer["choices"][0]["message"]["content"]
    assert [r.messages for r in requests[:2]] == [problem(), problem()]
    assert requests[2].messages[-1]["content"][1:] == [image()]
    assert requests[2].messages[-1]["content"][0]["text"].startswith("You are given a problem")


async def test_the_responses_api_takes_input_images_and_keeps_them_in_every_round():
    """``input_image`` parts of a Responses request reach every round as chat ``image_url`` parts, in order."""
    import openai

    settings = ProxySettings(port=0, shutdown_grace=2.0)
    content = [
        {"type": "input_text", "text": QUESTION},
        {"type": "input_image", "image_url": PNG_URL, "detail": "low"},
    ]
    picture = {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}}
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        async with PaCoReProxy(client, settings) as proxy:
            sdk = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
            response = await sdk.responses.create(
                model="pacore-low",
                input=[{"role": "user", "content": content}],
                extra_body={"pacore": {"schedule": "2"}},
            )
            await sdk.close()
        requests = list(server.requests)
    assert response.output_text
    assert len(requests) == 3
    original = [{"role": "user", "content": [{"type": "text", "text": QUESTION}, picture]}]
    assert [r.messages for r in requests[:2]] == [original, original]
    assert requests[2].messages[-1]["content"][1:] == [picture]
    assert requests[2].messages[-1]["content"][0]["text"].startswith("You are given a problem")


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"type": "input_image", "image_url": "/etc/hosts"}, "image_url must be an http(s) or a base64 data URL"),
        ({"type": "input_image", "image_url": "file:///etc/hosts"}, "image_url must be an http(s)"),
        ({"type": "input_image", "file_id": "file_1"}, "file_id is not supported"),
        ({"type": "input_image", "image_url": "data:text/plain;base64,aGk="}, "not a base64 image data URL"),
    ],
)
async def test_the_responses_api_refuses_images_it_cannot_send_and_never_reads_a_server_file(part, message):
    import openai

    settings = ProxySettings(port=0, shutdown_grace=2.0)
    content = [{"type": "input_text", "text": QUESTION}, part]
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        async with PaCoReProxy(client, settings) as proxy:
            sdk = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
            with pytest.raises(openai.BadRequestError, match=re.escape(message)):
                await sdk.responses.create(model="pacore-low", input=[{"role": "user", "content": content}])
            await sdk.close()
        assert server.requests == []


# --- pacore run --image -------------------------------------------------------------------------------------------


def test_pacore_run_image_sends_a_png_data_url():
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_cli(QUESTION, "--image", str(FIXTURE), "-s", "2", "--base-url", server.base_url, "--json")
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    assert len(requests) == 3
    for request in requests:
        part = request.messages[-1]["content"][-1]
        assert part["type"] == "image_url"
        assert part["image_url"]["url"].startswith("data:image/png;base64,")
        assert parse_data_url(part["image_url"]["url"]) == ("image/png", PNG)
    assert requests[0].messages == [{"role": "user", "content": [{"type": "text", "text": QUESTION}, image()]}]


def test_pacore_run_image_repeats_and_passes_urls_through():
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_cli(
            QUESTION,
            "--image",
            str(FIXTURE),
            "--image",
            "https://example.com/b.jpg",
            "-s",
            "1",
            "--base-url",
            server.base_url,
        )
        first = server.requests[0].messages[-1]["content"]
    assert result.exit_code == 0, result.output
    assert [p["type"] for p in first] == ["text", "image_url", "image_url"]
    assert first[2] == {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: str(tmp / "missing.png"), "no such file"),
        (lambda tmp: _write(tmp / "notes.txt", b"just text"), "unsupported type (text/plain)"),
        (lambda tmp: "ftp://example.com/cat.png", "ftp: URLs are not accepted"),
        (lambda tmp: "file:///etc/hostname", "file: URLs are not accepted"),
        (lambda tmp: "data:text/plain;base64,aGk=", "not a base64 image data URL"),
    ],
)
def test_pacore_run_bad_images_fail_in_one_line_with_nothing_sent(tmp_path, make, message):
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_cli(QUESTION, "--image", make(tmp_path), "-s", "2", "--base-url", server.base_url)
        sent = len(server.requests)
    assert result.exit_code == 2, result.output
    assert sent == 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --image: image ") and message in lines[0], lines


def test_pacore_run_over_the_request_limit_fails_in_one_line_with_nothing_sent():
    with FakeOpenAIServer(script).in_thread() as server:
        result = run_cli(
            QUESTION, "--image", str(FIXTURE), "-s", "3", "--max-request-bytes", "600", "--base-url", server.base_url
        )
        sent = len(server.requests)
    assert result.exit_code == 2, result.output
    assert sent == 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "round 1: each request would be" in lines[0] and "over max_request_bytes" in lines[0]
    assert "3 request(s) would send" in lines[0] and "Nothing of it was sent" in lines[0]


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# --- budget and size ------------------------------------------------------------------------------------------------


async def test_an_over_limit_round_fails_before_it_is_sent_saying_how_much_in_all():
    size = len(json.dumps(problem()))
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        graph = build_pacore_graph(client, config=PaCoReConfig(schedule=[4], max_request_bytes=size - 1))
        with pytest.raises(RequestTooLargeError) as caught:
            await run_graph(graph, {"messages": problem()})
        assert server.requests == []
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ContextBudgetError)
    assert f"({size:,} bytes)" in str(caught.value) and f"({4 * size:,} bytes) in all" in str(caught.value)


async def test_the_limit_counts_requests_not_trajectories_under_n_batching():
    size = len(json.dumps(problem()))
    graph = build_pacore_graph(
        FunctionBackend(lambda m, p: "x"), config=PaCoReConfig(schedule=[4], n_batch=4, max_request_bytes=size - 1)
    )
    with pytest.raises(RequestTooLargeError, match=r"1 request\(s\) would send"):
        await run_graph(graph, {"messages": problem()})


def test_the_estimate_never_counts_an_image_as_zero():
    text_only = [{"role": "user", "content": QUESTION}]
    assert estimate_tokens(problem()) == estimate_tokens(text_only) + MEDIA_PART_TOKENS


async def test_the_budget_counts_image_tokens_through_tokenize_with_the_image_sent_as_it_is():
    async with FakeOpenAIServer(script, tokenize=True, media_tokens=700) as server:
        async with VLLMClient(server.base_url) as client:
            assert await count_tokens(client, problem()) == (5 + 700, "tokenizer")
        assert server.tokenize_requests[0]["messages"] == problem()


async def test_an_estimate_is_marked_and_names_the_image_allowance():
    backend = FunctionBackend(lambda m, p: "x")  # cannot tokenize: the budget estimates
    with pytest.raises(ContextBudgetError, match=r"estimate, counting 1 non-text part\(s\) as 2,048 tokens each"):
        await fit_prompt(backend, problem(), [], "", max_model_len=1000, max_tokens=10, what="round 1")
    fitted = await fit_prompt(backend, problem(), [], "", max_model_len=10000, max_tokens=10, what="round 1")
    assert (fitted.tokens, fitted.counted) == (estimate_tokens(problem()), "estimate")
    graph = build_pacore_graph(backend, config=PaCoReConfig(schedule=[1], max_model_len=10000))
    started = [e async for e in stream_run(graph, {"messages": problem()}) if isinstance(e, RoundStarted)]
    assert [(e.tokens_counted, e.prompt_tokens is not None) for e in started] == [("estimate", True)] * 2
    assert started[0].request_bytes == len(json.dumps(problem()))


# --- traces and the HTML view ---------------------------------------------------------------------------------------


async def test_the_trace_records_images_by_reference_with_a_thumbnail(tmp_path):
    backend = FunctionBackend(lambda m, p: "<think>t</think>a gradient")
    trace = await record_run(build_pacore_graph(backend, "2"), {"messages": problem()})
    text = trace.model_dump_json()
    assert base64.b64encode(PNG).decode() not in text
    reference = {"sha256": hashlib.sha256(PNG).hexdigest(), "bytes": len(PNG), "mime": "image/png"}
    for trajectory in trace.trajectories:
        assert trajectory.messages[-1]["content"][-1] == {"type": "image_url", "image_url": {"url": reference}}
    assert trace.problem[-1]["content"][-1]["image_url"]["url"] == reference
    [media] = trace.media
    assert (media.sha256, media.bytes, media.mime) == (reference["sha256"], len(PNG), "image/png")
    assert media.thumbnail is not None and parse_data_url(media.thumbnail)[0] == "image/png"
    page = render_trace_html(Trace.read(trace.write(tmp_path / "t.json")))
    assert f'<img src="{media.thumbnail}"' in page and reference["sha256"][:12] in page
    assert QUESTION in page


def test_the_html_shows_a_placeholder_for_a_part_without_a_thumbnail():
    trace = Trace(
        graph=TraceGraph(name="g"),
        started_at=0.0,
        media=[TraceMedia(type="image_url", url="https://example.com/a.png"), TraceMedia(type="input_audio")],
    )
    page = render_trace_html(trace)
    assert page.count('class="ph"') == 2 and "https://example.com/a.png" in page and "<img" not in page


def test_the_cli_trace_holds_no_image_bytes(tmp_path):
    with FakeOpenAIServer(script).in_thread() as server:
        out = tmp_path / "run.json"
        result = run_cli(
            QUESTION, "--image", str(FIXTURE), "-s", "1", "--base-url", server.base_url, "--trace", str(out)
        )
    assert result.exit_code == 0, result.output
    trace = Trace.read(out)
    assert base64.b64encode(PNG).decode() not in out.read_text()
    assert trace.media[0].bytes == len(PNG)


# --- eval datasets and image sources --------------------------------------------------------------------------------


def test_dataset_images_are_relative_to_the_dataset_file(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(PNG)
    lines = [
        {"id": "1", "problem": QUESTION, "answer": "gradient", "images": ["pics/a.png", "https://example.com/b.jpg"]},
        {
            "id": "2",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": QUESTION}],
            "ground_truth": {"answer": "x"},
            "images": ["pics/a.png"],
        },
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    first, second = load_dataset(path)
    assert first.messages[-1]["content"] == [
        {"type": "text", "text": QUESTION},
        image(),
        {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}},
    ]
    assert second.messages[0] == {"role": "system", "content": "s"}
    assert second.messages[1]["content"] == [{"type": "text", "text": QUESTION}, image()]


def test_a_dataset_image_that_is_missing_names_the_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"id": "1", "problem": "q", "answer": "a", "images": ["nope.png"]}))
    with pytest.raises(DatasetError, match=r"line 1: images\[0\]: image nope.png: no such file"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"BM....", "image/bmp"),
        (b"II*\x00....", "image/tiff"),
        (b"%PDF-1.7", None),
    ],
)
def test_image_types_are_read_from_magic_bytes(data, mime):
    assert sniff_image_type(data) == mime


def test_a_file_without_a_known_signature_falls_back_to_its_name(tmp_path):
    named = tmp_path / "photo.jpg"
    named.write_bytes(b"not really a jpeg")
    assert image_part(str(named))["image_url"]["url"].startswith("data:image/jpeg;base64,")
    svg = tmp_path / "icon.svg"
    svg.write_text("<svg/>")
    with pytest.raises(ConfigError, match=r"unsupported type \(image/svg\+xml\)"):
        image_part(str(svg))


async def test_sampling_params_are_unchanged_by_images():
    backend = FunctionBackend(lambda m, p: "x")
    await run_graph(build_pacore_graph(backend, "1", params=SamplingParams(max_tokens=5)), {"messages": problem()})
    assert all(call.params.max_tokens == 5 for call in backend.calls)


async def test_a_langchain_chat_model_backend_sends_the_image_in_every_round():
    from langchain_openai import ChatOpenAI

    from pacore_graph import LangChainBackend

    async with FakeOpenAIServer(script) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="unused", model="fake-model", max_retries=0)
        problem_lc = [HumanMessage(content=[{"type": "text", "text": QUESTION}, image()])]
        try:
            await run_graph(build_pacore_graph(LangChainBackend(model), "2"), {"messages": problem_lc})
        finally:
            await model.root_async_client.close()
        requests = list(server.requests)
    assert len(requests) == 3
    for request in requests:
        assert request.messages[-1]["content"][-1] == image()
    assert requests[2].messages[-1]["content"][0]["text"].startswith("You are given a problem")


async def test_the_proxy_refuses_an_image_without_text_with_a_400_and_sends_nothing():
    settings = ProxySettings(port=0, shutdown_grace=2.0)
    async with FakeOpenAIServer(script) as server, VLLMClient(server.base_url, max_retries=0) as client:
        async with PaCoReProxy(client, settings) as proxy, aiohttp.ClientSession() as http:
            body = {"model": "pacore-low", "messages": [{"role": "user", "content": [image()]}]}
            async with http.post(f"{proxy.base_url}/chat/completions", json=body) as response:
                status, error = response.status, (await response.json())["error"]["message"]
        assert server.requests == []
    assert status == 400 and "has no text" in error


async def test_audio_parts_are_referenced_too():
    audio_bytes = b"RIFF\x00\x00\x00\x00WAVEfmt "
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio_bytes).decode(), "format": "wav"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "Who speaks?"}, audio]}]
    trace = await record_run(build_pacore_graph(FunctionBackend(lambda m, p: "x"), "1"), {"messages": messages})
    reference = {"sha256": hashlib.sha256(audio_bytes).hexdigest(), "bytes": len(audio_bytes), "mime": "audio/wav"}
    assert trace.trajectories[-1].messages[-1]["content"][-1] == {
        "type": "input_audio",
        "input_audio": {"data": reference, "format": "wav"},
    }
    assert [(m.type, m.mime, m.bytes, m.thumbnail) for m in trace.media] == [
        ("input_audio", "audio/wav", len(audio_bytes), None)
    ]


async def test_a_langchain_problem_is_traced_with_its_image_by_reference():
    block = {"type": "image", "base64": base64.b64encode(PNG).decode(), "mime_type": "image/png"}
    messages = [HumanMessage(content=[{"type": "text", "text": QUESTION}, block])]
    trace = await record_run(build_pacore_graph(FunctionBackend(lambda m, p: "x"), "1"), {"messages": messages})
    assert base64.b64encode(PNG).decode() not in trace.model_dump_json()
    assert trace.problem[0]["content"][1]["image_url"]["url"]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert trace.media[0].bytes == len(PNG)


# --- the training export -------------------------------------------------------------------------------------------


def test_the_training_export_keeps_the_images_of_an_episode_in_order(tmp_path):
    """A multimodal episode's TRL and verl rows carry its text as content and its image URLs, in order."""
    import datasets

    from pacore_graph.training.episode import Episode
    from pacore_graph.training.export import write_exports

    second = "https://example.com/b.jpg"
    prompt = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "T"}, image(), {"type": "image_url", "image_url": {"url": second}}],
        }
    ]
    episode = Episode(problem_id="p1", prompt=prompt, answer="12", slots=[3, 1], message_accuracy=0.25)
    paths = write_exports([episode], tmp_path)
    # verl's dataset class wants an <image> placeholder per image after the text; TRL reads the text alone
    for name, content in (("trl", "T"), ("verl", "T<image><image>")):
        row = datasets.load_dataset("parquet", data_files=str(paths[name]), split="train")[0]
        assert row["prompt"] == [{"role": "user", "content": content}]
        assert row["images"] == [PNG_URL, second]
