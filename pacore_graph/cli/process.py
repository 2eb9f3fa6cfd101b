"""Running a command's coroutine: ``asyncio.run``, with the collector tuned when the process is ``pacore`` itself.

The collector's settings belong to the whole process (:mod:`pacore_graph.gc_tuning`), so only the ``pacore``
script's own process changes them: :func:`pacore_graph.cli.main.main` marks the command line's context with
:data:`OWN_PROCESS`, and a test or an application that calls the Typer app directly keeps its collector as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from pacore_graph.gc_tuning import tune_gc

T = TypeVar("T")

#: The root context's ``obj`` when the command line runs in the ``pacore`` script's process
OWN_PROCESS = "pacore-process"


def run_command(ctx: typer.Context, main: Coroutine[Any, Any, T]) -> T:
    """Run the command's coroutine to its end; in the ``pacore`` process, tune the collector first.

    Tuned here, after the command's imports and before its run, so that the freeze takes the libraries' objects.
    """
    if ctx.find_root().obj == OWN_PROCESS:
        tune_gc()
    return asyncio.run(main)
