"""The ``pacore`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from pacore_graph.cli.backend import ServerOptions, open_backend, split_base_urls
from pacore_graph.cli.engine import engine_app
from pacore_graph.cli.eval import eval_command
from pacore_graph.cli.graphs import RunGraph, given_options, graphs_app, resolve_run_graph
from pacore_graph.cli.live import make_display
from pacore_graph.cli.options import (
    ApiKeyOption,
    BaseUrlOption,
    ConcurrencyOption,
    EngineModelOption,
    MaxTokensOption,
    ModelOption,
    TemperatureOption,
    TopPOption,
)
from pacore_graph.cli.render import show_result
from pacore_graph.cli.serve import serve_command
from pacore_graph.cli.trace import trace_app
from pacore_graph.clients.base import ChatBackend
from pacore_graph.durable import DURABILITY, check_resumable, lock_run, open_checkpointer, run_config
from pacore_graph.errors import ConfigError, PaCoReError
from pacore_graph.events import RoundStarted, parse_event
from pacore_graph.result import PaCoReResult
from pacore_graph.schedule import DEFAULT_MAX_K, DEFAULT_MAX_ROUNDS, Schedule
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
app.command("eval")(eval_command)
app.command("serve")(serve_command)


def _read_problem(problem: str) -> str:
    if problem != "-":
        return problem
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"standard input is not UTF-8 text (byte {exc.start}); convert it to UTF-8") from exc


async def _run(
    problem: str,
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
    graph = run_graph.build(client, checkpointer=checkpointer)
    ks = run_graph.config.schedule.all_rounds
    inputs: dict[str, Any] | None = {"problem": problem}
    durable: dict[str, Any] = {}
    if run_id is not None:
        status = await check_resumable(graph, run_id, problem)
        if status.state == "finished":
            progress.print(f"[dim]run {run_id!r} already finished; showing its stored result[/]", highlight=False)
            return PaCoReResult.from_output(status.values, run_graph.config.schedule)
        if status.state == "interrupted":
            progress.print(f"[dim]resuming run {run_id!r} from its last checkpoint[/]", highlight=False)
            inputs = None  # LangGraph resumes from the checkpoint; finished explorers are not run again
        durable = {"config": run_config(run_id), "durability": DURABILITY}
    display = make_display(progress, len(ks) - 1, quiet=quiet)
    output: dict[str, Any] = {}
    try:
        # Progress comes from the custom events; the output from the updates, which every graph type gives.
        async for _, mode, chunk in graph.astream(inputs, stream_mode=["custom", "updates"], subgraphs=True, **durable):
            if mode == "updates":
                values = chunk.values() if isinstance(chunk, dict) else ()
                output = next((v for v in values if isinstance(v, dict) and "answer" in v), output)
                continue
            event = parse_event(chunk)
            if event is None:
                continue
            if recorder is not None:
                recorder.add(event)
            if phase is not None and isinstance(event, RoundStarted):
                phase.set("final synthesis" if event.final else f"round {event.round}/{len(ks) - 1}")
            display.handle(event)
    finally:
        display.close()
    if run_id is not None:  # a resumed run's updates may not hold the whole output; the checkpoint does
        output = dict((await graph.aget_state(run_config(run_id))).values)
    return PaCoReResult.from_output(output, run_graph.config.schedule)


@app.command()
def run(
    ctx: typer.Context,
    problem: Annotated[str, typer.Argument(help="The problem to solve; '-' reads it from standard input.")],
    graph: Annotated[
        str | None,
        typer.Option("--graph", "-g", help="A graph name (`pacore graphs list`) or a spec .yaml; default pacore-low."),
    ] = None,
    schedule: Annotated[
        str,
        typer.Option("--schedule", "-s", help="Parallel rounds: '32,4', or low=[4], medium=[16], high=[32,4]."),
    ] = "low",
    engine_model: EngineModelOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = 1.0,
    top_p: TopPOption = 1.0,
    seed: Annotated[int | None, typer.Option(help="Base seed; trajectory i uses seed + i.")] = None,
    truncated: Annotated[
        str, typer.Option(help="Trajectories cut off before concluding: 'drop' them or 'keep' them whole.")
    ] = "drop",
    concurrency: ConcurrencyOption = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(min=1, help="The model's context in tokens: trim references so every prompt fits it."),
    ] = None,
    min_trajectories: Annotated[
        int | None,
        typer.Option(min=1, help="Let a round go on when requests fail, if at least this many trajectories came back."),
    ] = None,
    min_fraction: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Let a round go on when requests fail, if this fraction of K came back."),
    ] = None,
    straggler_grace: Annotated[
        float | None,
        typer.Option(min=0.0, help="With a quorum: close a round this many seconds after its quorum came back."),
    ] = None,
    n_batch: Annotated[
        int | None,
        typer.Option(min=1, help="Send a round's explorers as requests of up to N choices (vLLM n); default off."),
    ] = None,
    max_k: Annotated[int, typer.Option(min=1, help="Largest K allowed in one round.")] = DEFAULT_MAX_K,
    max_rounds: Annotated[int, typer.Option(min=1, help="Most parallel rounds allowed.")] = DEFAULT_MAX_ROUNDS,
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
    out = Console()
    err = Console(stderr=True)
    phase = _Phase()
    try:
        text = _read_problem(problem)
        if not text.strip():
            raise ConfigError("the problem is empty; give the question to solve as the first argument")
        if truncated not in ("drop", "keep"):
            raise ConfigError(f"invalid --truncated {truncated!r}: use 'drop' or 'keep'")
        policy: Literal["drop", "keep"] = "keep" if truncated == "keep" else "drop"
        # Options left at their defaults do not override the graph spec's settings.
        given = given_options(ctx, "schedule", "temperature", "top_p", "max_tokens", "seed", "truncated")
        sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
        run_graph = resolve_run_graph(
            graph,
            schedule=Schedule.parse(schedule, max_k=max_k, max_rounds=max_rounds) if "schedule" in given else None,
            sampling={name: value for name, value in sampling.items() if name in given},
            truncated=policy if "truncated" in given else None,
            max_model_len=max_model_len,
            n_batch=n_batch,
            failure={
                name: value
                for name, value in (
                    ("min_trajectories", min_trajectories),
                    ("min_fraction", min_fraction),
                    ("straggler_grace", straggler_grace),
                )
                if value is not None
            },
            max_k=max_k,
            max_rounds=max_rounds,
        )
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
                problem=text,
                secrets=[api_key] if api_key else [],
            )
        result = asyncio.run(
            _solve(text, run_graph, server, err, phase, quiet=quiet, recorder=recorder, durable=durable)
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
        out.print_json(json.dumps(_json_summary(result)))
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
    text: str,
    run_graph: RunGraph,
    server: ServerOptions,
    console: Console,
    phase: _Phase,
    *,
    quiet: bool = False,
    recorder: TraceRecorder | None = None,
    durable: _Durable | None = None,
) -> PaCoReResult:
    async with AsyncExitStack() as stack:
        checkpointer = None
        if durable is not None:  # opened first: a bad store fails before an engine is started
            checkpointer = await stack.enter_async_context(open_checkpointer(durable.db_path, url=durable.url))
            await stack.enter_async_context(lock_run(checkpointer, durable.run_id))  # one process per run id
        client = await stack.enter_async_context(open_backend(server, console, phase.set))
        phase.set("round 1")
        return await _run(
            text,
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
    """Entry point of the ``pacore`` script."""
    app()
