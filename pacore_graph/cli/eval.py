"""``pacore eval``: run graphs over a dataset on any OpenAI-compatible server (or the embedded engine), grade them,
and report accuracy against test-time compute as a markdown table and a PNG."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from pacore_graph.cli.backend import ServerOptions, open_backend, split_base_urls
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
from pacore_graph.cli.process import run_command
from pacore_graph.cli.render import error_exit
from pacore_graph.errors import ConfigError, PaCoReError
from pacore_graph.schedule import DEFAULT_MAX_K, DEFAULT_MAX_ROUNDS

# The eval harness (graphs, LangGraph, grading) loads when the command runs, not at `pacore --help`.
if TYPE_CHECKING:
    from rich.progress import Progress

    from pacore_graph.eval.datasets import Problem
    from pacore_graph.eval.grading import Grader
    from pacore_graph.eval.pool import EvalCounters, TrajectoryPool
    from pacore_graph.eval.report import GraphMetrics
    from pacore_graph.eval.runner import EvalGraph, EvalRecord
    from pacore_graph.eval.self_consistency import SCPoint
    from pacore_graph.progress import ProgressLines

__all__ = ["PLOT_FILE", "REPORT_FILE", "eval_command"]

REPORT_FILE = "report.md"
PLOT_FILE = "accuracy_vs_ttc.png"
METRICS_FILE = "metrics.json"
SC_CURVE_FILE = "sc_curve.json"


class _Live:
    """The progress bar's figures: runs done, accuracy so far, and tokens/s the server generated."""

    def __init__(
        self, progress: Progress, task: Any, counters: EvalCounters, lines: ProgressLines | None, todo: int
    ) -> None:
        self.progress = progress
        self.task = task
        self.counters = counters
        self.lines = lines  # off a terminal: plain lines instead of the bar
        self.todo = todo
        self.started = time.monotonic()
        self.right = 0
        self.done = 0

    def _speed(self) -> str:
        return f"{self.counters.generated_tokens / max(time.monotonic() - self.started, 1e-6):.0f} tok/s"

    def record(self, record: EvalRecord) -> None:
        self.done += 1
        self.right += record.correct
        accuracy = f"acc {100 * self.right / self.done:.1f}%"
        self.progress.update(self.task, advance=1, accuracy=accuracy, speed=self._speed())
        if self.lines is not None:
            outcome = "error" if record.error else "right" if record.correct else "wrong"
            self.lines.update(
                f"{self.done}/{self.todo} runs done ({record.graph} {record.problem_id} run {record.run}: "
                f"{outcome}), {accuracy}, {self._speed()}"
            )

    async def heartbeat(self, every: float = 2.0) -> None:
        """Off a terminal: a line when no run has finished for a while, so a long run is never silent."""
        while self.lines is not None:
            await asyncio.sleep(every)
            self.lines.heartbeat(
                f"{self.done}/{self.todo} runs done, {self.counters.requests} requests, "
                f"{self.counters.generated_tokens:,} completion tokens so far, {self._speed()}"
            )


async def _evaluate(
    problems: list[Problem],
    graphs: list[EvalGraph],
    server: ServerOptions,
    grader: Grader,
    *,
    runs: int,
    out: Path,
    pool: TrajectoryPool | None,
    pool_size: int | None,
    parallel: int,
    seed: int,
    counters: EvalCounters,
    err: Console,
) -> list[EvalRecord]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pacore_graph.eval.runner import ResultsLog, run_eval
    from pacore_graph.progress import ProgressLines

    log = ResultsLog(out)
    log.open(problems, graphs)
    total = len(problems) * runs * len(graphs)
    already = sum(log.done(g.label, p.id, r) for p in problems for r in range(runs) for g in graphs)
    if already:
        err.print(f"[dim]resuming: {already} of {total} runs are already in {log.path}[/]", soft_wrap=True)
    if already == total:
        return await run_eval(problems, graphs, _NoBackend(), grader, runs=runs, log=log)
    async with open_backend(server, err) as client:
        progress = Progress(
            TextColumn("[bold]eval"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs"),
            TextColumn("{task.fields[accuracy]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,  # the table replaces it; and an error stays the one line printed
            disable=not err.is_terminal,  # a log file gets the table, not bar frames
        )
        # Off a terminal: plain lines, from 3 s on (an eval over by then, or failing at once, prints only its
        # result or its one error line), then a line per finished run and at least one every 10 s.
        lines = None if err.is_terminal else ProgressLines("pacore eval", stream=err.file, start_after=3.0)
        if lines is not None:
            lines.line(f"{total - already} runs to do ({len(problems)} problems × {runs} runs × {len(graphs)} graphs)")
        with progress:
            task = progress.add_task("eval", total=total, completed=already, accuracy="acc -", speed="0 tok/s")
            live = _Live(progress, task, counters, lines, total - already)
            beat = asyncio.create_task(live.heartbeat())
            try:
                return await run_eval(
                    problems,
                    graphs,
                    client,
                    grader,
                    runs=runs,
                    log=log,
                    pool=pool,
                    pool_size=pool_size,
                    parallel=parallel,
                    seed=seed,
                    model=await client.resolve_model(),
                    counters=counters,
                    on_record=live.record,
                )
            finally:
                beat.cancel()
                if lines is not None:
                    lines.close()


class _NoBackend:
    """Stands in for the server when every run is already recorded: nothing may be sent."""

    async def chat(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError("internal error: a finished evaluation tried to send a request")


def _write_report(
    metrics: list[GraphMetrics], sc: list[SCPoint], out: Path, *, title: str, pool_line: str | None
) -> tuple[str, Path]:
    """Write report.md, metrics.json, sc_curve.json and the plot; return the tables as printed."""
    from pacore_graph.eval.report import markdown_table, plot_accuracy_vs_ttc
    from pacore_graph.eval.self_consistency import sc_table
    from pacore_graph.eval.synthesis import synthesis_table

    table = markdown_table(metrics)
    diagnosed = [(m.graph, m.synthesis) for m in metrics if m.synthesis is not None]
    if diagnosed:
        table += (
            f"\nSynthesis diagnostics (the final synthesis and the references it saw):\n\n{synthesis_table(diagnosed)}"
        )
    if sc:
        table += f"\nSelf-consistency from the round-1 pool, no new requests:\n\n{sc_table(sc)}"
    text = f"# {title}\n\n{table}"
    if pool_line:
        text += f"\n{pool_line}\n"
    (out / REPORT_FILE).write_text(text, encoding="utf-8")
    (out / METRICS_FILE).write_text(
        json.dumps([m.model_dump(mode="json") for m in metrics], indent=2) + "\n", encoding="utf-8"
    )
    (out / SC_CURVE_FILE).write_text(json.dumps([p.model_dump() for p in sc], indent=2) + "\n", encoding="utf-8")
    plot = plot_accuracy_vs_ttc(metrics, out / PLOT_FILE, title=title, sc_curve=sc)
    return table, plot


def _list_sources(console: Console) -> None:
    """Print the dataset sources, each with its form and a few of its datasets."""
    from pacore_graph.eval.datasets import SOURCES

    console.print("JSONL file: a path; reference, simple or code format (see the README)", markup=False)
    for source in SOURCES.values():
        console.print(f"{source.prefix}: {source.usage}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"    {source.description}", markup=False, highlight=False, soft_wrap=True)
        if source.examples is not None:
            console.print(f"    {source.examples()}", markup=False, highlight=False, soft_wrap=True)


def eval_command(
    ctx: typer.Context,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="A JSONL file (reference, simple or code format), builtin:arith[?n=20&seed=0], "
            "'reasoning-gym:TASK[,TASK]?size=N&seed=S' or humaneval: (see --list-sources)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for results.jsonl, pool.jsonl, report.md and the PNG.")
    ] = None,
    list_sources: Annotated[
        bool, typer.Option("--list-sources", help="List the dataset sources and some of their datasets, then exit.")
    ] = False,
    graph: Annotated[
        list[str] | None,
        typer.Option(
            "--graph",
            "-g",
            help="A graph name or spec .yaml, optionally NAME:SCHEDULE (self-consistency:5); repeat for more.",
        ),
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="Runs of every graph on every problem.")] = 4,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N problems.")] = None,
    pool: Annotated[
        bool, typer.Option(help="Reuse a pool of round-1 trajectories across runs and graphs (the paper's trick).")
    ] = True,
    pool_file: Annotated[
        Path | None,
        typer.Option(help="Where the round-1 pool is kept (default OUT/pool.jsonl); share it across folders."),
    ] = None,
    pool_size: Annotated[
        int | None, typer.Option(min=1, help="Round-1 slots per problem (default: largest K_1 × runs).")
    ] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Runs (graph × problem × run) in flight at most.")] = 8,
    engine_model: EngineModelOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    schedule: ScheduleOption = None,
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
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Evaluate graphs on a dataset: accuracy (mean ± SE, majority vote), TTC tokens and time, synthesis
    diagnostics, self-consistency from the round-1 pool, tables and plot."""
    from pacore_graph.eval.datasets import load_dataset
    from pacore_graph.eval.grading import CategoryGrader, answer_extraction, require_eval_extras
    from pacore_graph.eval.pool import EvalCounters, TrajectoryPool
    from pacore_graph.eval.report import compute_metrics
    from pacore_graph.eval.runner import POOL_FILE, EvalGraph, resolve_eval_graphs
    from pacore_graph.eval.self_consistency import sc_curve

    out_console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    counters = EvalCounters()
    started = time.monotonic()
    sc: list[SCPoint] = []
    try:
        if list_sources:
            _list_sources(out_console)
            return
        if dataset is None or out is None:
            raise ConfigError("pacore eval needs --dataset and --out (or --list-sources)")
        require_eval_extras()
        # The same graph options as `pacore run`; --schedule applies to each --graph without its own :SCHEDULE.
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
        graphs = resolve_eval_graphs(graph or ["pacore-low"], overrides)
        for each in graphs:
            each.spec.schedule.check_limits(max_k=max_k, max_rounds=max_rounds)
        problems = load_dataset(dataset)[:limit]
        grader = CategoryGrader()
        extraction = answer_extraction(grader, problems)
        if extraction is not None:  # the voting graphs read answers as the dataset's grader does
            graphs = [EvalGraph(g.label, g.spec.model_copy(update={"extraction": extraction})) for g in graphs]
        trajectory_pool = TrajectoryPool(pool_file or out / POOL_FILE) if pool else None
        server = ServerOptions(split_base_urls(base_url), model, api_key, concurrency, engine_model)
        records = run_command(
            ctx,
            _evaluate(
                problems,
                graphs,
                server,
                grader,
                runs=runs,
                out=out,
                pool=trajectory_pool,
                pool_size=pool_size,
                parallel=parallel,
                seed=seed or 0,
                counters=counters,
                err=err,
            ),
        )
        if trajectory_pool is not None:  # SC@k from the pool the runs drew from: no request is sent
            sc = asyncio.run(sc_curve(problems, records, trajectory_pool, grader, seed=seed or 0))
    except PaCoReError as exc:
        if debug:
            raise
        raise error_exit(err, exc) from None
    except KeyboardInterrupt:
        err.print(f"[bold red]interrupted[/]: finished runs are saved in {out}; rerun the same command to continue")
        raise typer.Exit(130) from None
    metrics = [compute_metrics(g, records) for g in graphs]
    pool_line = None
    if trajectory_pool is not None:
        served = sum(m.pool_served for m in metrics)
        generated = sum(m.pool_generated for m in metrics)
        pool_line = (
            f"Round-1 pool: {served} trajectories served from the pool, {generated} of them generated and "
            f"{served - generated} reused; {len(trajectory_pool)} stored in {trajectory_pool.path}."
        )
    title = f"{dataset} ({len(problems)} problems)"
    table, plot = _write_report(metrics, sc, out, title=title, pool_line=pool_line)
    out_console.print(table, markup=False, highlight=False, soft_wrap=True)
    if pool_line:
        out_console.print(pool_line, markup=False, highlight=False, soft_wrap=True)
    out_console.print(
        f"This invocation: {counters.requests} requests, {counters.generated_tokens:,} completion tokens generated, "
        f"{time.monotonic() - started:.0f} s.",
        markup=False,
        highlight=False,
    )
    out_console.print(f"Report: {out / REPORT_FILE}; plot: {plot}", markup=False, highlight=False, soft_wrap=True)
