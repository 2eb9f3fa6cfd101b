"""Options shared by the commands that talk to a model server (`run`, `eval`), declared once.

The graph options (``--schedule``, sampling, ``--truncated``, ``--max-model-len``, ``--max-request-bytes``, the
quorum, ``--n-batch``)
are the core's overrides (:class:`pacore_graph.overrides.Overrides`) spelled as flags: both commands take the
same ones, :func:`graph_overrides` collects those the user gave, and the graph applies them through
``with_overrides``, which checks them. The numeric flags' ranges are read from the settings fields they set,
so typer refuses a value out of range while parsing without a second copy of the bounds.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer
from annotated_types import Ge, Gt, Le, Lt

from pacore_graph.engine.address import DEFAULT_ENGINE_MAX_TOKENS
from pacore_graph.overrides import NO_CAP, Overrides, override_field
from pacore_graph.schedule import DEFAULT_MAX_K, DEFAULT_MAX_ROUNDS, Schedule

__all__ = [
    "ApiKeyOption",
    "BaseUrlOption",
    "ConcurrencyOption",
    "EmptyOption",
    "EngineModelOption",
    "MaxKOption",
    "MaxModelLenOption",
    "MaxRequestBytesOption",
    "MaxRoundsOption",
    "MaxTokensOption",
    "MinFractionOption",
    "MinTrajectoriesOption",
    "ModelOption",
    "NBatchOption",
    "ScheduleOption",
    "SeedOption",
    "StragglerGraceOption",
    "TemperatureOption",
    "TopPOption",
    "TruncatedOption",
    "graph_overrides",
    "parse_concurrency",
    "parse_max_tokens",
]


def _bounds(option: str) -> dict[str, Any]:
    """typer's ``min``/``max`` for an option, from the constraints of the settings field it sets."""
    field = override_field(option)
    integral = field.annotation in (int, int | None)
    bounds: dict[str, Any] = {}
    for rule in field.metadata:  # open float bounds (top_p > 0) stay closed here: the settings model refuses 0
        if isinstance(rule, Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, Gt):
            bounds["min"] = cast(int, rule.gt) + 1 if integral else rule.gt
        elif isinstance(rule, Le):
            bounds["max"] = rule.le
        elif isinstance(rule, Lt):
            bounds["max"] = cast(int, rule.lt) - 1 if integral else rule.lt
    return bounds


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


# -- graph options: each sets one setting of the graph (default: the spec's) ---------------------------------------

ScheduleOption = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        "-s",
        show_default=False,
        help="Parallel rounds: '32,4', or low=[4], medium=[16], high=[32,4] (default: the graph's).",
    ),
]
MaxKOption = Annotated[int, typer.Option(min=1, help="Largest K allowed in one round.")]
MaxRoundsOption = Annotated[int, typer.Option(min=1, help="Most parallel rounds allowed.")]
MaxTokensOption = Annotated[
    str | None,
    typer.Option(
        parser=lambda value: parse_max_tokens(value),
        metavar="N|none",
        show_default=False,
        help=(
            "Completion token cap per trajectory. Default: what fits, the server's context (max_model_len) minus "
            f"the prompt, at most {DEFAULT_ENGINE_MAX_TOKENS} on the embedded engine's SmolLM2; a larger N is "
            "lowered to what fits. 'none': no cap (the server's default)."
        ),
    ),
]


def parse_max_tokens(value: Any) -> str | None:
    """``--max-tokens``: a whole number of at least 1, or ``none`` (no cap: ``token_budget="none"``)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == NO_CAP:
        return NO_CAP
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter(f"{value!r} is neither 'none' nor a whole number of at least 1")
    return str(int(text))


TemperatureOption = Annotated[
    float | None,
    typer.Option(**_bounds("temperature"), show_default=False, help="Sampling temperature (default: the graph's)."),
]
TopPOption = Annotated[
    float | None,
    typer.Option(**_bounds("top_p"), show_default=False, help="Nucleus sampling (default: the graph's)."),
]
SeedOption = Annotated[
    int | None,
    typer.Option(help="Base seed; trajectory i uses seed + i (eval: also the pool's draw order, default 0)."),
]
TruncatedOption = Annotated[
    str | None,
    typer.Option(
        show_default=False,
        help="Trajectories cut off before concluding: 'drop' them or 'keep' them whole (default: the graph's).",
    ),
]
EmptyOption = Annotated[
    str | None,
    typer.Option(
        show_default=False,
        help="Empty conclusions: 'drop' them (the references renumbered) or 'keep' them as blank references, as the "
        "authors' code does (default: the graph's).",
    ),
]
MaxModelLenOption = Annotated[
    int | None,
    typer.Option(
        **_bounds("max_model_len"), help="The model's context in tokens: trim references so every prompt fits it."
    ),
]
MaxRequestBytesOption = Annotated[
    int | None,
    typer.Option(
        **_bounds("max_request_bytes"),
        show_default=False,
        help="Largest JSON body of one request (images included); larger fails before it is sent (default 32 MiB).",
    ),
]
MinTrajectoriesOption = Annotated[
    int | None,
    typer.Option(
        **_bounds("min_trajectories"),
        help="Let a round go on when requests fail, if at least this many trajectories came back.",
    ),
]
MinFractionOption = Annotated[
    float | None,
    typer.Option(
        **_bounds("min_fraction"), help="Let a round go on when requests fail, if this fraction of K came back."
    ),
]
StragglerGraceOption = Annotated[
    float | None,
    typer.Option(
        **_bounds("straggler_grace"), help="With a quorum: close a round this many seconds after its quorum came back."
    ),
]
NBatchOption = Annotated[
    int | None,
    typer.Option(
        **_bounds("n_batch"), help="Send a round's explorers as requests of up to N choices (vLLM n); default off."
    ),
]


def graph_overrides(
    *, schedule: str | None = None, max_k: int = DEFAULT_MAX_K, max_rounds: int = DEFAULT_MAX_ROUNDS, **options: Any
) -> Overrides:
    """The graph options the user gave (``None``: not given), the schedule parsed within ``--max-k``/``--max-rounds``.

    Raises :class:`~pacore_graph.ConfigError` for a bad schedule; the other values are checked when the graph
    applies them.
    """
    given = {name: value for name, value in options.items() if value is not None}
    if schedule is not None:
        given["schedule"] = Schedule.parse(schedule, max_k=max_k, max_rounds=max_rounds)
    return Overrides(**given)
