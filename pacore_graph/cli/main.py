"""The ``pacore`` command line."""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from pacore_graph.cli.backend import ServerOptions, open_backend, split_base_urls
from pacore_graph.cli.engine import engine_app
from pacore_graph.cli.eval import eval_command
from pacore_graph.cli.graphs import RunGraph, given_options, graphs_app, resolve_run_graph
from pacore_graph.cli.mcp import mcp_command
from pacore_graph.cli.options import (
    ApiKeyOption,
    BaseUrlOption,
    ConcurrencyOption,
    EmptyOption,
    EngineModelOption,
    MaxKOption,
    MaxModelLenOption,
    MaxRequestBytesOption,
    MaxRoundsOption,
    MaxTokensOption,
    MinFractionOption,
    MinTrajectoriesOption,
    ModelOption,
    NBatchOption,
    ScheduleOption,
    SeedOption,
    StragglerGraceOption,
    TemperatureOption,
    TopPOption,
    TruncatedOption,
    graph_overrides,
)
from pacore_graph.cli.process import OWN_PROCESS, run_command
from pacore_graph.cli.render import show_result, write_plain
from pacore_graph.cli.serve import serve_command
from pacore_graph.cli.trace import trace_app
from pacore_graph.cli.train import train_app
from pacore_graph.errors import ConfigError, GraphOutputError, PaCoReError
from pacore_graph.schedule import DEFAULT_MAX_K, DEFAULT_MAX_ROUNDS

# The graph machinery (LangGraph, LangChain, aiohttp) loads inside the commands, so `pacore --help` stays fast.
if TYPE_CHECKING:
    from pacore_graph.clients.base import ChatBackend
    from pacore_graph.result import PaCoReResult
    from pacore_graph.trace import TraceRecorder

__all__ = ["app", "main"]

app = typer.Typer(
    name="pacore",
    help="PaCoRe: parallel coordinated reasoning over any OpenAI-compatible model server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """PaCoRe: parallel coordinated reasoning over any OpenAI-compatible model server."""


app.add_typer(graphs_app, name="graphs")
app.add_typer(engine_app, name="engine")
app.add_typer(trace_app, name="trace")
app.add_typer(train_app, name="train")
app.command("eval")(eval_command)
app.command("serve")(serve_command)
app.command("mcp")(mcp_command)


def _read_problem(problem: str) -> str:
    if problem != "-":
        return problem
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"standard input is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from exc


def _problem_with_images(text: str, images: list[str]) -> str | list[dict[str, Any]]:
    """The problem as ``pacore run`` sends it: the text alone, or one user message of the text then each image."""
    if not images:
        return text
    from pacore_graph.media import image_part

    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for source in images:
        try:
            parts.append(image_part(source))
        except ConfigError as exc:
            raise ConfigError(f"--image: {exc}") from None
    return [{"role": "user", "content": parts}]


async def _run(
    problem: str | list[dict[str, Any]],
    run_graph: RunGraph,
    client: ChatBackend,
    progress: Console,
    phase: _Phase | None = None,
    *,
    quiet: bool = False,
    recorder: TraceRecorder | None = None,
    run_id: str | None = None,
    checkpointer: Any = None,
) -> PaCoReResult:
    """Run the graph, showing its progress events (live on a terminal) and recording them for ``--trace``.

    With ``run_id`` (and a ``checkpointer``) the run is durable: a run interrupted earlier resumes where it
    stopped, and a finished one returns its stored result without calling the model (see pacore_graph.durable).
    """
    from pacore_graph.cli.live import make_display
    from pacore_graph.durable import DURABILITY, check_resumable, run_config
    from pacore_graph.events import RoundStarted
    from pacore_graph.result import PaCoReResult
    from pacore_graph.run import run_graph as run_compiled  # `run_graph` names the RunGraph argument here
    from pacore_graph.run import stream_run

    graph = run_graph.build(client, checkpointer=checkpointer)
    ks = run_graph.config.schedule.all_rounds
    inputs: dict[str, Any] | None = {"problem": problem}
    durable: dict[str, Any] = {}
    if run_id is not None:
        status = await check_resumable(graph, run_id, problem)
        durable = {"config": run_config(run_id), "durability": DURABILITY}
        if status.state == "finished":
            progress.print(f"[dim]run {run_id!r} already finished; showing its stored result[/]", highlight=False)
            return await run_compiled(graph, None, **durable)  # reads the checkpoint; no node runs again
        if status.state == "interrupted":
            progress.print(f"[dim]resuming run {run_id!r} from its last checkpoint[/]", highlight=False)
            inputs = None  # LangGraph resumes from the checkpoint; finished explorers are not run again
    display = make_display(progress, len(ks) - 1, quiet=quiet)
    result: PaCoReResult | None = None
    try:
        async for item in stream_run(graph, inputs, **durable):
            if isinstance(item, PaCoReResult):
                result = item
                continue
            if recorder is not None:
                recorder.add(item)
            if phase is not None and isinstance(item, RoundStarted):
                phase.set("final synthesis" if item.final else f"round {item.round}/{len(ks) - 1}")
            display.handle(item)
    finally:
        display.close()
    if result is None:  # stream_run ends with the result or raises
        raise GraphOutputError("the run ended without a result")
    return result


@app.command()
def run(
    ctx: typer.Context,
    problem: Annotated[str, typer.Argument(help="The problem to solve; '-' reads it from standard input.")],
    image: Annotated[
        list[str] | None,
        typer.Option(
            "--image",
            metavar="FILE_OR_URL",
            help="Attach an image (repeatable): a PNG/JPEG/GIF/WebP/BMP/TIFF file, an http(s):// or a data: URL.",
        ),
    ] = None,
    graph: Annotated[
        str | None,
        typer.Option("--graph", "-g", help="A graph name (`pacore graphs list`) or a spec .yaml; default pacore-low."),
    ] = None,
    schedule: ScheduleOption = None,
    engine_model: EngineModelOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    seed: SeedOption = None,
    truncated: TruncatedOption = None,
    empty: EmptyOption = None,
    concurrency: ConcurrencyOption = None,
    max_model_len: MaxModelLenOption = None,
    min_trajectories: MinTrajectoriesOption = None,
    min_fraction: MinFractionOption = None,
    straggler_grace: StragglerGraceOption = None,
    n_batch: NBatchOption = None,
    max_request_bytes: MaxRequestBytesOption = None,
    max_k: MaxKOption = DEFAULT_MAX_K,
    max_rounds: MaxRoundsOption = DEFAULT_MAX_ROUNDS,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    trace: Annotated[
        Path | None,
        typer.Option(help="Write the run's trace (every request and trajectory) to this JSON file."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Plain progress lines instead of the live display.")
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option(help="Checkpoint the run under this id; rerunning the same id resumes it after a crash."),
    ] = None,
    checkpoint_db: Annotated[
        Path | None,
        typer.Option(help="With --run-id: the SQLite checkpoint file (default: runs.sqlite in the cache dir)."),
    ] = None,
    checkpoint_url: Annotated[
        str | None,
        typer.Option(
            envvar="PACORE_CHECKPOINT_URL", help="With --run-id: checkpoint to PostgreSQL (postgresql://...)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Solve PROBLEM with PaCoRe and print the answer and the per-round table."""
    from pacore_graph.trace import TraceRecorder

    out = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    phase = _Phase()
    try:
        text = _read_problem(problem)
        if not text.strip():
            raise ConfigError("the problem is empty; give the question to solve as the first argument")
        problem_input = _problem_with_images(text, image or [])
        overrides = graph_overrides(
            schedule=schedule,
            max_k=max_k,
            max_rounds=max_rounds,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            truncated=truncated,
            empty=empty,
            max_model_len=max_model_len,
            min_trajectories=min_trajectories,
            min_fraction=min_fraction,
            straggler_grace=straggler_grace,
            n_batch=n_batch,
            max_request_bytes=max_request_bytes,
        )
        run_graph = resolve_run_graph(graph, overrides, max_k=max_k, max_rounds=max_rounds)
        if run_id is None and (checkpoint_db is not None or "checkpoint_url" in given_options(ctx, "checkpoint_url")):
            raise ConfigError("--checkpoint-db and --checkpoint-url need --run-id NAME (the run to checkpoint)")
        if run_id is not None and checkpoint_db is not None and checkpoint_url:
            raise ConfigError("give --checkpoint-db or --checkpoint-url, not both")
        durable = _Durable(run_id, checkpoint_db, checkpoint_url) if run_id is not None else None
        server = ServerOptions(split_base_urls(base_url), model, api_key, concurrency, engine_model)
        recorder = None
        if trace is not None:
            recorder = TraceRecorder(
                graph_name=run_graph.spec.name,
                spec=run_graph.spec.model_dump(mode="json"),
                problem=problem_input,
                secrets=[api_key] if api_key else [],
            )
        result = run_command(
            ctx, _solve(problem_input, run_graph, server, err, phase, quiet=quiet, recorder=recorder, durable=durable)
        )
        if recorder is not None and trace is not None:
            _write_trace(recorder, trace)
    except PaCoReError as exc:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None
    except KeyboardInterrupt:
        err.print(
            f"[bold red]interrupted[/] during {phase.text}: the run was stopped and any engine it started was shut "
            "down; no answer was produced"
        )
        raise typer.Exit(130) from None
    if json_output:
        if out.is_terminal:
            out.print_json(json.dumps(_json_summary(result)))
        else:  # a pipe gets plain JSON that no renderer touched
            write_plain(out, json.dumps(_json_summary(result), indent=2, ensure_ascii=False))
    else:
        show_result(result, out)
        if result.finish_reason == "length":
            err.print("[yellow]warning:[/] the final synthesis hit max_tokens; the answer may be cut off")


@dataclass(frozen=True)
class _Durable:
    """Where and under which id a durable run (``--run-id``) checkpoints."""

    run_id: str
    db_path: Path | None
    url: str | None


class _Phase:
    """What the run is doing now, so an interruption can say what it stopped."""

    def __init__(self) -> None:
        self.text = "start-up"

    def set(self, text: str) -> None:
        self.text = text


async def _solve(
    problem: str | list[dict[str, Any]],
    run_graph: RunGraph,
    server: ServerOptions,
    console: Console,
    phase: _Phase,
    *,
    quiet: bool = False,
    recorder: TraceRecorder | None = None,
    durable: _Durable | None = None,
) -> PaCoReResult:
    from pacore_graph.durable import lock_run, open_checkpointer

    async with AsyncExitStack() as stack:
        checkpointer = None
        if durable is not None:  # opened first: a bad store fails before an engine is started
            checkpointer = await stack.enter_async_context(open_checkpointer(durable.db_path, url=durable.url))
            await stack.enter_async_context(lock_run(checkpointer, durable.run_id))  # one process per run id
        client = await stack.enter_async_context(open_backend(server, console, phase.set))
        phase.set("round 1")
        return await _run(
            problem,
            run_graph,
            client,
            console,
            phase,
            quiet=quiet,
            recorder=recorder,
            run_id=durable.run_id if durable is not None else None,
            checkpointer=checkpointer,
        )


def _write_trace(recorder: TraceRecorder, path: Path) -> None:
    try:
        recorder.trace().write(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the trace to {path}: {exc.strerror or exc}; choose another --trace path"
        ) from exc


def _json_summary(result: PaCoReResult) -> dict[str, Any]:
    return result.model_dump(mode="json")


def main() -> None:
    """Entry point of the ``pacore`` script.

    Help goes through rich's panels on a terminal, and through click's plain formatter otherwise (``| less``, a
    file, a narrow log): rich lays options out in a fixed-width table that cuts long words ("http://127.0.0.1:8…")
    when there are only 80 columns, where click wraps whole words.
    """
    if not sys.stdout.isatty():
        app.rich_markup_mode = None  # the root's mode is every subcommand's
    app(obj=OWN_PROCESS)  # this process is pacore's own: its commands may tune the collector (cli.process)
