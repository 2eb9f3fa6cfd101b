"""Options shared by the commands that talk to a model server (`run`, `eval`), declared once."""

from __future__ import annotations

from typing import Annotated, Any

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
    "parse_concurrency",
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
ConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        parser=lambda value: parse_concurrency(value),
        metavar="auto|N",
        show_default=False,
        help=(
            "Sequences in flight per server: 'auto' (default) starts at 64 and follows a vLLM server's /metrics "
            "(fixed at 64 for other servers); N fixes the window at N."
        ),
    ),
]


def parse_concurrency(value: Any) -> int | None:
    """``--concurrency``: ``auto`` (None: the adaptive window) or a whole number of at least 1 (a fixed window)."""
    if value is None or isinstance(value, int):
        return value  # already parsed (typer passes defaults through the parser too)
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter(f"{value!r} is neither 'auto' nor a whole number of at least 1")
    return int(text)
