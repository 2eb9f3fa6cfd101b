"""Options shared by the commands that talk to a model server (`run`, `eval`), declared once."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = [
    "ApiKeyOption",
    "BaseUrlOption",
    "ConcurrencyOption",
    "EngineModelOption",
    "MaxTokensOption",
    "ModelOption",
    "TemperatureOption",
    "TopPOption",
]

EngineModelOption = Annotated[
    str | None,
    typer.Option(help="With no --base-url: the model the embedded vLLM engine serves (GPU machines)."),
]
BaseUrlOption = Annotated[
    list[str] | None,
    typer.Option(
        envvar="PACORE_BASE_URL",
        metavar="URL",
        help=(
            "OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1. Repeat it (or give the variable several URLs "
            "separated by commas or spaces) to spread requests over several servers of the same model."
        ),
    ),
]
ModelOption = Annotated[
    str | None, typer.Option(envvar="PACORE_MODEL", help="Model name (default: the server's first).")
]
ApiKeyOption = Annotated[str | None, typer.Option(envvar="PACORE_API_KEY", help="Bearer key for the server.")]
MaxTokensOption = Annotated[int | None, typer.Option(min=1, help="Completion token cap per trajectory.")]
TemperatureOption = Annotated[float, typer.Option(min=0.0, help="Sampling temperature.")]
TopPOption = Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling.")]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="Maximum requests in flight (per server).")]
