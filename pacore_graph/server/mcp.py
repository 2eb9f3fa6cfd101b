"""PaCoRe as an MCP server: one tool, ``deep_reason``, over stdio or streamable HTTP (``pacore mcp``).

Built on the official ``mcp`` SDK (its ``MCPServer``; install the ``mcp`` extra). The tool takes a ``problem``,
optionally a ``graph`` (a served graph name, default the server's) and a ``schedule`` (``"4"``, ``"32,4"``,
``[32, 4]`` or a preset such as ``"high"``), runs the graph through :func:`pacore_graph.run.stream_run`, and
returns the answer as text with the whole result as structured content (:class:`DeepReasonOutput`: the answer,
``finish_reason``, the graph, the schedule, one row per round and the usage).

While it runs, a client that asked for progress (a ``progressToken``) gets one progress notification per round:
when each parallel round and the final synthesis start (``RoundStarted``), ``progress`` counting the rounds
started and ``total`` the rounds of the run, the message naming the round, its K and what the previous round's
compaction kept (``RoundCompacted``).

Bad input (an unknown graph, a bad schedule, an empty problem, a schedule over ``max_trajectories``) and upstream
failures are tool errors (``isError``) with a one-line message; nothing is sent upstream for bad input.

Over HTTP (:meth:`PaCoReMCP.http_app`) the endpoint is ``/mcp``; with ``api_key`` set, a request without
``Authorization: Bearer <api_key>`` gets 401 (the key is compared in constant time). Binding the socket is the
caller's (``pacore mcp`` binds 127.0.0.1 unless told otherwise)::

    async with VLLMClient("http://127.0.0.1:8000/v1") as backend:
        server = PaCoReMCP(backend, MCPSettings(default_graph="pacore-low"))
        await server.run_stdio()
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field
from starlette.applications import Starlette

from pacore_graph.clients.base import ChatBackend
from pacore_graph.errors import ConfigError, PaCoReError
from pacore_graph.events import RoundCompacted, RoundStarted
from pacore_graph.graphs import DEFAULT_GRAPH, GraphSpec, build_graph, discover_graphs, load_spec
from pacore_graph.graphs.kinds import CompiledGraph
from pacore_graph.overrides import Overrides
from pacore_graph.result import PaCoReResult
from pacore_graph.run import stream_run
from pacore_graph.schedule import Schedule

__all__ = ["HTTP_PATH", "TOOL_NAME", "DeepReasonOutput", "MCPSettings", "PaCoReMCP"]

#: The tool's name.
TOOL_NAME = "deep_reason"

#: The streamable HTTP endpoint's path.
HTTP_PATH = "/mcp"

_DESCRIPTION = (
    "Think very hard about a difficult, self-contained problem (math, logic, code) with PaCoRe: many parallel "
    "reasoning attempts, compacted and reconciled over rounds into one answer. Slow: use it for the hard part. "
    "Returns the final answer, with the token usage and one row per round as structured content."
)


class DeepReasonOutput(PaCoReResult):
    """What ``deep_reason`` returns as structured content: the run's :class:`PaCoReResult` and the graph's name."""

    graph: str = Field(description="the graph that ran")


@dataclass(frozen=True)
class MCPSettings:
    """What the MCP server serves and allows.

    Attributes:
        default_graph: the graph a call without ``graph`` runs: a graph name or a spec ``.yaml`` (served under its
            name).
        max_trajectories: the most trajectories (K summed over the rounds, synthesis included) one call may run.
        api_key: over HTTP, clients must send ``Authorization: Bearer <api_key>``; ``None``: no key asked.
    """

    default_graph: str = DEFAULT_GRAPH
    max_trajectories: int = 256
    api_key: str | None = None


class _StaticKey:
    """The SDK's bearer-token check against one fixed key (constant-time), for ``--http-api-key``."""

    def __init__(self, key: str) -> None:
        self._expected = key.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        """An access token when ``token`` is the key, else ``None`` (the SDK answers 401)."""
        if not hmac.compare_digest(token.encode(), self._expected):
            return None
        return AccessToken(token=token, client_id="pacore-mcp-client", scopes=[])


def _one_line(text: str) -> str:
    """A message on one line: MCP clients show tool errors to a model, often in a single line."""
    return " ".join(text.split())


class PaCoReMCP:
    """The MCP server over one backend: :attr:`server` is the SDK's ``MCPServer`` with the ``deep_reason`` tool.

    Run it with :meth:`run_stdio`, or serve :meth:`http_app` (a Starlette app) with any ASGI server (``pacore mcp``
    uses uvicorn).
    """

    def __init__(self, backend: ChatBackend, settings: MCPSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or MCPSettings()
        default = load_spec(self.settings.default_graph)  # a bad name or file is a ConfigError before serving
        self.specs: dict[str, GraphSpec] = {
            entry.name: entry.spec for entry in discover_graphs() if entry.spec is not None
        }
        self.specs[default.name] = default
        self.default_graph = default.name
        auth: dict[str, Any] = {}
        if self.settings.api_key is not None:
            # A resource server with a static key: no OAuth server, so the issuer is nominal (the SDK requires
            # one) and no OAuth routes are added.
            auth = {
                "token_verifier": _StaticKey(self.settings.api_key),
                "auth": AuthSettings(issuer_url="http://127.0.0.1", resource_server_url=None),
            }
        self.server: MCPServer[Any] = MCPServer(
            "pacore",
            instructions=f"Call {TOOL_NAME} for problems that need careful reasoning. Graphs: {', '.join(self.specs)}.",
            log_level="WARNING",
            **auth,
        )
        self.server.add_tool(
            self.deep_reason,
            name=TOOL_NAME,
            title="Deep reasoning (PaCoRe)",
            description=_DESCRIPTION,
            annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
        )

    async def deep_reason(
        self,
        problem: Annotated[str, Field(description="the full problem statement, self-contained")],
        ctx: Context,
        graph: Annotated[
            str | None, Field(description="a graph name (see the server's instructions); default: the server's")
        ] = None,
        schedule: Annotated[
            str | int | list[int] | None,
            Field(description="parallel rounds: '4', '32,4', [32, 4], or low, medium, high; default: the graph's"),
        ] = None,
    ) -> Annotated[CallToolResult, DeepReasonOutput]:
        """Run PaCoRe on ``problem``; one progress notification per round; the answer and the usage back."""
        spec = self._spec_for(problem, graph, schedule)
        compiled = build_graph(spec, self.backend)
        rounds = _round_count(compiled, spec)
        started = 0
        compacted: RoundCompacted | None = None
        result: PaCoReResult | None = None
        try:
            async for item in stream_run(compiled, {"problem": problem}):
                if isinstance(item, PaCoReResult):
                    result = item
                elif isinstance(item, RoundCompacted):
                    compacted = item
                elif isinstance(item, RoundStarted):
                    started += 1
                    await ctx.report_progress(started, max(rounds, started), _describe(item, rounds, compacted))
        except PaCoReError as exc:  # upstream failures, rounds with nothing to go on
            raise ToolError(_one_line(f"{type(exc).__name__}: {exc}")) from exc
        assert result is not None  # stream_run ends with the result or raises
        output = DeepReasonOutput(**result.model_dump(), graph=spec.name)
        return CallToolResult(
            content=[TextContent(type="text", text=result.answer)],
            structured_content=output.model_dump(mode="json"),
        )

    def _spec_for(self, problem: str, graph: str | None, schedule: str | int | list[int] | None) -> GraphSpec:
        """The spec a call runs, with its schedule; raises ``ToolError`` (one line) for bad input."""
        try:
            if not problem.strip():
                raise ConfigError("the problem is empty; pass the full problem statement")
            name = graph or self.default_graph
            spec = self.specs.get(name)
            if spec is None:
                raise ConfigError(f"unknown graph {name!r}; available: {', '.join(self.specs)}")
            if schedule is not None:
                spec = spec.with_overrides(Overrides(schedule=Schedule.parse(schedule)))
            total = spec.schedule.total_trajectories
            if total > self.settings.max_trajectories:
                raise ConfigError(
                    f"schedule {spec.schedule.spec!r} runs {total} trajectories, over this server's limit of "
                    f"{self.settings.max_trajectories} per call; ask for a smaller schedule"
                )
        except PaCoReError as exc:
            raise ToolError(_one_line(str(exc))) from exc
        return spec

    async def run_stdio(self) -> None:
        """Serve one client over standard input and output until it closes them."""
        await self.server.run_stdio_async()

    def http_app(self, host: str = "127.0.0.1") -> Starlette:
        """The streamable HTTP app (endpoint :data:`HTTP_PATH`); ``host`` is where it listens (loopback hosts
        get the SDK's DNS-rebinding protection)."""
        return self.server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)


def _round_count(graph: CompiledGraph, spec: GraphSpec) -> int:
    """The rounds a run starts: the parallel ones and the final synthesis, which voting graphs (an output with
    ``votes``, as :meth:`PaCoReResult.from_output` reads it) do not make."""
    channels = graph.output_channels
    votes = "votes" in ([channels] if isinstance(channels, str) else channels)
    return len(spec.schedule.rounds) + (0 if votes else 1)


def _describe(event: RoundStarted, rounds: int, compacted: RoundCompacted | None) -> str:
    """The progress message for a round that started, with what the previous round's compaction kept."""
    what = "final synthesis" if event.final else f"round {event.round}"
    text = f"{what} started ({event.round}/{rounds}): K={event.k}"
    if compacted is not None and compacted.round == event.round - 1:
        text += f"; round {compacted.round} kept {compacted.kept} of {compacted.returned} references"
    return text
