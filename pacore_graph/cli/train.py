"""``pacore train build``: training data for a PaCoRe synthesizer (message pools, stage filter, TRL and verl files).

The server options are ``pacore eval``'s (``--base-url``, ``--model``, the embedded engine by default), and so are
the datasets (files and sources) and the round-1 pool file (``--pool-file``: share one with an eval folder).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console

from pacore_graph.cli.backend import ServerOptions, open_backend, split_base_urls
from pacore_graph.cli.options import (
    ApiKeyOption,
    BaseUrlOption,
    ConcurrencyOption,
    EngineModelOption,
    MaxTokensOption,
    ModelOption,
    TemperatureOption,
    TopPOption,
    TruncatedOption,
    graph_overrides,
)
from pacore_graph.cli.process import run_command
from pacore_graph.cli.render import print_error
from pacore_graph.errors import ConfigError, PaCoReError

# The training face (the eval harness, pyarrow, matplotlib) loads when the command runs, not at `pacore --help`.
if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from pacore_graph.eval.datasets import Problem
    from pacore_graph.eval.grading import Grader
    from pacore_graph.eval.pool import TrajectoryPool
    from pacore_graph.training.build import BuildResult, BuildSettings
    from pacore_graph.training.pool import PoolProgress

__all__ = ["build_command", "train_app"]

DOMAINS = ("math", "code")
#: Seconds between two plain progress lines (stderr not a terminal): a log gets a few lines, not one per message.
PLAIN_INTERVAL = 2.0

train_app = typer.Typer(
    name="train",
    help="Training data for a PaCoRe synthesizer (paper §2.2): message pools, stage filters, TRL and verl files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class _Reporter:
    """Progress on stderr: a bar on a terminal; elsewhere a plain line at most every few seconds, and the last."""

    def __init__(self, err: Console) -> None:
        from pacore_graph.progress import ProgressLines

        self.err = err
        self.started = time.monotonic()
        self.lines = ProgressLines("pacore train", min_interval=PLAIN_INTERVAL)
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )

    def __enter__(self) -> _Reporter:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.lines.close()

    def update(self, name: str, done: int, total: int, note: str) -> None:
        if self.progress is not None:
            task = self.tasks.get(name)
            if task is None:
                task = self.tasks[name] = self.progress.add_task(name, total=total, note=note)
            self.progress.update(task, completed=done, total=total, note=note)
            return
        text = f"{name}: {done}/{total} {note}"
        if done < total:
            self.lines.update(text)
        else:
            self.lines.line(text)

    def pool(self, progress: PoolProgress) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        note = (
            f"messages ({progress.reused} reused, {progress.generated} generated, "
            f"{progress.completion_tokens / elapsed:.0f} tok/s)"
        )
        self.update("pool", progress.done, progress.total, note)

    def grading(self, done: int, total: int) -> None:
        self.update("grading", done, total, "problems")

    def synthesis(self, done: int, total: int) -> None:
        self.update("stage 2 syntheses", done, total, "syntheses")


def _fail(err: Console, message: str, code: int = 2) -> typer.Exit:
    print_error(err, message)
    return typer.Exit(code)


def _require_train_extra() -> None:
    """Fail before any request when the exports could not be written."""
    import importlib.util

    from pacore_graph.eval.grading import MissingExtraError

    if importlib.util.find_spec("pyarrow") is None:
        raise MissingExtraError("pacore train build writes parquet with pyarrow: pip install 'pacore-graph[train]'")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder (it is created if missing)")


async def _build(
    problems: list[Problem],
    server: ServerOptions,
    grader: Grader,
    settings: BuildSettings,
    *,
    pool: TrajectoryPool,
    syntheses: TrajectoryPool,
    err: Console,
) -> BuildResult:
    from pacore_graph.training.build import build_training_data

    async with open_backend(server, err) as client:
        with _Reporter(err) as reporter:
            return await build_training_data(
                problems,
                client,
                grader,
                settings,
                pool=pool,
                syntheses=syntheses,
                model=await client.resolve_model(),
                on_pool=reporter.pool,
                on_grade=reporter.grading,
                on_synthesis=reporter.synthesis,
            )


@train_app.command("build")
def build_command(
    ctx: typer.Context,
    dataset: Annotated[
        str,
        typer.Option(
            help="A JSONL file (reference, simple or code format), builtin:arith[?n=20&seed=0], "
            "'reasoning-gym:TASK[,TASK]?size=N&seed=S' or humaneval: (see pacore eval --list-sources)."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for trl.parquet, verl.parquet, manifest.json, the histogram and the pool.")
    ],
    pool_size: Annotated[int, typer.Option(min=1, help="Round-1 messages per problem (the paper's 24).")] = 24,
    messages: Annotated[
        str, typer.Option(metavar="LO-HI", help="|M|, references per episode, uniform in LO..HI (the paper's 16-24).")
    ] = "16-24",
    stage: Annotated[
        int, typer.Option(help="1: keep 0 < message accuracy < 9/24 (math), < 15/24 (code); 2: 0 < synthesis acc < 1.")
    ] = 1,
    episodes_per_problem: Annotated[int, typer.Option(min=1, help="Episodes sampled per kept problem.")] = 1,
    synthesis_samples: Annotated[
        int, typer.Option(min=1, help="Stage 2: syntheses sampled per problem with the server (the current policy).")
    ] = 8,
    domain: Annotated[
        str | None,
        typer.Option(help="math or code; every problem must be of it (default: each problem's own category)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the episodes' sampling; trajectory slot i is also sampled with seed + i.")
    ] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N problems.")] = None,
    pool_file: Annotated[
        Path | None,
        typer.Option(help="Where the round-1 pool is kept (default OUT/pool.jsonl); pacore eval's pool file works."),
    ] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Problems whose pools are filled at once.")] = 8,
    engine_model: EngineModelOption = None,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    api_key: ApiKeyOption = None,
    concurrency: ConcurrencyOption = None,
    max_tokens: MaxTokensOption = None,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    truncated: TruncatedOption = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Build training episodes: a pool of round-1 messages per problem (resumable), graded; the stage filter;
    P(x, M) with |M| pool references in the official template; TRL and verl parquet files, manifest, histogram."""
    err = Console(stderr=True)
    out_console = Console()
    started = time.monotonic()
    try:
        if domain is not None and domain not in DOMAINS:
            raise ConfigError(f"--domain {domain!r} is not known; give math or code")
        if stage not in (1, 2):
            raise ConfigError(f"--stage {stage} does not exist; give 1 (message accuracy) or 2 (synthesis accuracy)")
        _check_out(out)
        from pacore_graph.config import PaCoReConfig
        from pacore_graph.eval.datasets import load_dataset
        from pacore_graph.eval.grading import CategoryGrader, require_eval_extras
        from pacore_graph.eval.pool import TrajectoryPool
        from pacore_graph.eval.runner import POOL_FILE
        from pacore_graph.training.build import SYNTHESES_FILE, BuildSettings, check_problems, write_outputs
        from pacore_graph.training.sampling import MessageRange

        span = MessageRange.parse(messages, pool_size)
        require_eval_extras()
        _require_train_extra()
        # The round-1 and synthesis params as the graph would send them, so the pool key is the eval's.
        config = PaCoReConfig().with_overrides(
            graph_overrides(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, truncated=truncated)
        )
        settings = BuildSettings(
            pool_size=pool_size,
            messages=(span.lo, span.hi),
            stage=cast(Any, stage),
            episodes_per_problem=episodes_per_problem,
            synthesis_samples=synthesis_samples,
            domain=cast(Any, domain),
            seed=seed,
            parallel=parallel,
            params=config.params_for_round(1),
            synthesis_params=config.final_params,
            compaction=config.compaction,
        )
        problems = load_dataset(dataset)[:limit]
        check_problems(problems, settings.domain)
        pool = TrajectoryPool(pool_file or out / POOL_FILE)
        syntheses = TrajectoryPool(out / SYNTHESES_FILE)
        if pool.loaded:
            err.print(f"[dim]pool: {pool.loaded} stored trajectories in {pool.path}[/]", soft_wrap=True)
        server = ServerOptions(split_base_urls(base_url), model, api_key, concurrency, engine_model)
        result = run_command(
            ctx, _build(problems, server, CategoryGrader(), settings, pool=pool, syntheses=syntheses, err=err)
        )
        paths = write_outputs(result, out, dataset=dataset)
    except PaCoReError as exc:
        if debug:
            raise
        raise _fail(err, str(exc), 2 if isinstance(exc, ConfigError) else 1) from None
    except KeyboardInterrupt:
        err.print(f"[bold red]interrupted[/]: the pool is saved in {out}; rerun the same command to continue")
        raise typer.Exit(130) from None
    counts = [f"{len(result.summaries)} problems"]
    counts.append(f"stage 1 filter kept {sum(s.stage1 for s in result.summaries)}")
    if stage == 2:
        counts.append(f"stage 2 filter kept {result.kept}")
    progress = result.progress
    lines = [
        f"{', '.join(counts)}; {len(result.episodes)} episodes with {span.spec} references each.",
        f"Pool: {progress.total} messages, {progress.generated} generated and {progress.reused} reused ({pool.path}).",
        f"Wrote {', '.join(str(p) for p in paths.values())} in {time.monotonic() - started:.0f} s.",
    ]
    for line in lines:
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)
