"""Execution traces: one self-describing JSON file per run, recorded from the event stream, never from state.

A :class:`TraceRecorder` consumes :mod:`pacore_graph.events` (it is an event sink), so the full transcripts
(every request's messages and params, every trajectory's content and reasoning) never enter the checkpointed
graph state::

    recorder = TraceRecorder(graph_name="pacore-high", spec=spec.model_dump(mode="json"), problem=problem)
    async for event in stream_events(graph, {"problem": problem}):
        recorder.add(event)
    recorder.trace().write("run.json")

or simply ``trace = await record_run(graph, {"problem": problem}, graph_name=...)``.

Secrets: API keys travel in HTTP headers, not in requests' messages or params, so they never reach a trace.
That is also enforced: values under secret-looking keys (``api_key``, ``authorization``, ...) and any string
passed in ``secrets`` are replaced by ``"[REDACTED]"`` when the trace is built.

Images and other non-text parts are recorded by reference, never their bytes: every base64 ``data:`` URL (and
``input_audio`` data) in the problem and in each request's messages is replaced by ``{"sha256", "bytes", "mime"}``
(:func:`pacore_graph.media.reference_media`). ``Trace.media`` lists the problem's non-text parts by the same
reference (an http(s) URL is kept as it is), each image with one small thumbnail (a PNG data URL of at most 128
pixels a side, a few KB) when Pillow is installed; without Pillow there is none and the HTML view shows a
placeholder with the reference.

A resumed run (a checkpointer) only streams the events of the nodes that run again, so its trace holds
those alone.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pacore_graph.errors import PaCoReError
from pacore_graph.events import (
    PaCoReEvent,
    RoundCompacted,
    RoundStarted,
    RunFinished,
    SynthesisDelta,
    TrajectoryFinished,
    stream_events,
)
from pacore_graph.media import media_reference, problem_media, reference_media, thumbnail

__all__ = [
    "REDACTED",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "Trace",
    "TraceGraph",
    "TraceMedia",
    "TraceRecorder",
    "TraceRound",
    "TraceTrajectory",
    "record_run",
    "redact",
]

TRACE_FORMAT: Literal["pacore-trace"] = "pacore-trace"
TRACE_VERSION = 1
REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(r"(?i)(api[_-]?key|authorization|secret|password|token$|^bearer)")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TraceTrajectory(_Model):
    """One request and the trajectory it returned."""

    round: int
    index: int
    final: bool = False
    messages: list[dict[str, Any]] = Field(description="the request's chat messages, as sent")
    params: dict[str, Any] = Field(description="the request's sampling params")
    content: str
    reasoning: str | None = None
    finish_reason: str
    answer: str | None = Field(None, description="the answer extracted from the conclusion, if any")
    prompt_tokens: int
    completion_tokens: int
    started_at: float = Field(description="wall-clock start, Unix seconds")
    seconds: float
    error: str | None = Field(None, description="why the request failed after retries (a tolerated failure)")


class TraceRound(_Model):
    """One round: what was asked, every trajectory, and what compaction handed to the next round."""

    round: int
    k: int
    final: bool = False
    prompt_chars: int = 0
    prompt_tokens: int | None = Field(None, description="the prompt's tokens, when fitted to max_model_len")
    tokens_counted: str | None = Field(None, description="how prompt_tokens was had: tokenizer or estimate")
    request_bytes: int | None = Field(None, description="the JSON size of one request's messages, images included")
    trajectories: list[TraceTrajectory] = Field(default_factory=list)
    kept: int | None = None
    dropped_empty: int | None = None
    dropped_truncated: int | None = None
    failed: int | None = None
    messages_after_compaction: list[str] | None = Field(
        None, description="the references the next round was shown (None for the final round)"
    )
    next_prompt_chars: int | None = None


class TraceMedia(_Model):
    """One non-text part of the problem (an image, ...) by reference: never its bytes."""

    type: str = Field(description="the part's type: image_url, input_audio, ...")
    mime: str | None = None
    sha256: str | None = Field(None, description="of the decoded bytes of a data URL; None for a URL")
    bytes: int | None = None
    url: str | None = Field(None, description="the part's URL when it is not a data URL (the server fetches it)")
    thumbnail: str | None = Field(None, description="a PNG data URL of at most 128 px a side (needs Pillow)")


class TraceGraph(_Model):
    """Which graph ran: its name and its resolved spec."""

    name: str
    spec: dict[str, Any] = Field(default_factory=dict)


class Trace(_Model):
    """A whole run. ``format``/``version`` identify the file; times are Unix seconds."""

    format: Literal["pacore-trace"] = TRACE_FORMAT
    version: int = TRACE_VERSION
    graph: TraceGraph
    problem: str | list[dict[str, Any]] | None = None
    media: list[TraceMedia] = Field(default_factory=list, description="the problem's non-text parts, by reference")
    started_at: float
    finished_at: float | None = None
    rounds: list[TraceRound] = Field(default_factory=list)
    answer: str | None = None
    finish_reason: str | None = None
    votes: dict[str, int] | None = None
    usage: dict[str, Any] | None = None

    @property
    def trajectories(self) -> list[TraceTrajectory]:
        """Every trajectory of every round, in round order."""
        return [t for r in self.rounds for t in r.trajectories]

    def write(self, path: str | Path) -> Path:
        """Write the trace as indented JSON (UTF-8) and return the path."""
        target = Path(path)
        target.write_text(self.model_dump_json(indent=1), encoding="utf-8")
        return target

    @classmethod
    def read(cls, path: str | Path) -> Trace:
        """Load a trace file written by :meth:`write` (or ``pacore run --trace``)."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of ``value`` with secret-looking keys' values and every occurrence of ``secrets`` replaced."""
    hidden = [s for s in secrets if s]
    return _redact(value, hidden)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


class TraceRecorder:
    """An event sink that builds a :class:`Trace`: feed it every event of a run with :meth:`add`.

    ``secrets`` (e.g. the API key) are redacted wherever they appear; see the module docstring.
    Synthesis deltas are not stored: the final trajectory's content holds the same text.
    """

    def __init__(
        self,
        *,
        graph_name: str = "pacore",
        spec: dict[str, Any] | None = None,
        problem: str | list[dict[str, Any]] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self._secrets = [s for s in secrets if s]
        self._media: dict[str, dict[str, Any]] = {}  # data URL -> reference: each image is hashed once
        self._trace = Trace(
            graph=TraceGraph(name=graph_name, spec=redact(spec or {}, self._secrets)),
            problem=redact(reference_media(problem, self._media), self._secrets),
            media=_problem_media(problem),
            started_at=time.time(),
        )
        self._rounds: dict[int, TraceRound] = {}

    def _round(self, number: int, k: int = 0, final: bool = False) -> TraceRound:
        found = self._rounds.get(number)
        if found is None:
            found = self._rounds[number] = TraceRound(round=number, k=k, final=final)
        return found

    def add(self, event: PaCoReEvent) -> None:
        """Record one event (events of other kinds are ignored)."""
        if isinstance(event, RoundStarted):
            row = self._round(event.round, event.k, event.final)
            row.k, row.final, row.prompt_chars = event.k, event.final, event.prompt_chars
            row.prompt_tokens, row.tokens_counted = event.prompt_tokens, event.tokens_counted
            row.request_bytes = event.request_bytes
        elif isinstance(event, TrajectoryFinished):
            row = self._round(event.round, final=event.final)
            row.trajectories.append(
                TraceTrajectory(
                    round=event.round,
                    index=event.index,
                    final=event.final,
                    messages=redact(reference_media(event.messages, self._media), self._secrets),
                    params=redact(event.params, self._secrets),
                    content=redact(event.content, self._secrets),
                    reasoning=redact(event.reasoning, self._secrets),
                    finish_reason=event.finish_reason,
                    answer=event.answer,
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    started_at=event.started_at,
                    seconds=event.seconds,
                    error=redact(event.error, self._secrets) if event.error is not None else None,
                )
            )
        elif isinstance(event, RoundCompacted):
            row = self._round(event.round, event.k)
            row.kept, row.dropped_empty, row.dropped_truncated, row.failed = (
                event.kept,
                event.dropped_empty,
                event.dropped_truncated,
                event.failed,
            )
            row.messages_after_compaction = redact(event.messages, self._secrets)
            row.next_prompt_chars = event.next_prompt_chars
        elif isinstance(event, RunFinished):
            self._trace.answer = redact(event.answer, self._secrets)
            self._trace.finish_reason = event.finish_reason
            self._trace.votes = event.votes
            self._trace.usage = event.usage
            self._trace.finished_at = time.time()
        elif isinstance(event, SynthesisDelta):
            pass

    def trace(self) -> Trace:
        """The trace so far: rounds in order, each round's trajectories by index."""
        rounds = [self._rounds[n] for n in sorted(self._rounds)]
        for row in rounds:
            row.trajectories.sort(key=lambda t: t.index)
        trace = self._trace.model_copy(update={"rounds": rounds})
        if self._secrets:
            # The belt to redact()'s braces: no secret may survive anywhere in the file.
            text = trace.model_dump_json()
            if any(secret in text for secret in self._secrets):
                raise PaCoReError("a secret reached the trace; this is a bug in pacore-graph, please report it")
        return trace


async def record_run(
    graph: Any,
    inputs: dict[str, Any],
    config: Any = None,
    *,
    graph_name: str = "pacore",
    spec: dict[str, Any] | None = None,
    secrets: Iterable[str] = (),
) -> Trace:
    """Run ``graph`` on ``inputs`` while recording its trace; return the trace (its answer included)."""
    problem = inputs.get("problem", inputs.get("messages"))
    recorder = TraceRecorder(graph_name=graph_name, spec=spec, problem=_jsonable(problem), secrets=secrets)
    async for event in stream_events(graph, inputs, config):
        recorder.add(event)
    return recorder.trace()


def _problem_media(problem: Any) -> list[TraceMedia]:
    """The problem's non-text parts by reference, each image with a thumbnail when one can be made."""
    if not isinstance(problem, list):
        return []
    media = []
    for kind, mime, data, url in problem_media(problem):
        if data is None or mime is None:
            media.append(TraceMedia(type=kind, url=url))
            continue
        reference = media_reference(data, mime)
        small = thumbnail(data) if mime.startswith("image/") else None
        media.append(TraceMedia(type=kind, **reference, thumbnail=small))
    return media


def _jsonable(value: Any) -> Any:
    """The problem as JSON data: LangChain messages become their OpenAI dicts (so image blocks become data URLs,
    which the trace then references, instead of bytes under LangChain's own keys)."""
    try:
        json.dumps(value)
        return value
    except TypeError:
        from langchain_core.messages import BaseMessage, convert_to_openai_messages

        return [dict(convert_to_openai_messages(m)) if isinstance(m, BaseMessage) else str(m) for m in value]
