"""The one path every override of a graph's settings takes: command-line flags, the proxy's ``pacore`` options
and Python (:meth:`PaCoReConfig.with_overrides <pacore_graph.PaCoReConfig.with_overrides>`).

An override is a flat option (:class:`Overrides`) that sets one settings field, or for the sampling options the
same field in every round. The options carry only their types: the ranges and the rules across fields are the
settings model's (:mod:`pacore_graph.config`), so a bad value gives the same one-line :class:`ConfigError`,
naming the option, from every face::

    invalid option top_p=0.0: Input should be greater than 0
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from pacore_graph.clients.base import SamplingParams
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.config import FailurePolicy, PaCoReConfig
from pacore_graph.errors import ConfigError
from pacore_graph.schedule import Schedule
from pacore_graph.structured import ResponseFormat

__all__ = ["NO_CAP", "OVERRIDE_TARGETS", "Overrides", "apply_overrides", "check_override", "override_field"]

_Config = TypeVar("_Config", bound=PaCoReConfig)


class Overrides(BaseModel):
    """The options a run may override, as the proxy's ``pacore`` object and Python name them (the command line
    spells them ``--max-model-len`` etc.). Unset (``None``) options leave the graph's settings as they are.

    ``schedule`` takes ``"32,4"``, ``[32, 4]``, ``4``, a preset or a :class:`~pacore_graph.Schedule`; the sampling
    options (``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``, ``presence_penalty``,
    ``frequency_penalty``) apply to every round; ``max_tokens="none"`` unsets it in every round and turns the
    default budget off (``token_budget="none"``: no cap, the server's default); ``response_format`` (OpenAI's,
    or a pydantic model class) to the final synthesis (:mod:`pacore_graph.structured`); ``truncated`` is
    ``compaction.truncated`` and ``empty`` ``compaction.empty``; ``min_trajectories``, ``min_fraction`` and
    ``straggler_grace`` are the ``failure`` quorum; ``max_prompt_chars``, ``max_model_len``,
    ``max_request_bytes`` and ``n_batch`` are the settings of those names.
    Values are checked when applied, by the settings model (see :data:`OVERRIDE_TARGETS`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: Schedule | str | list[int] | int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | Literal["none"] | None = None
    seed: int | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | dict[str, Any] | type[BaseModel] | None = None
    truncated: str | None = None
    empty: str | None = None
    max_prompt_chars: int | None = None
    max_model_len: int | None = None
    max_request_bytes: int | None = None
    min_trajectories: int | None = None
    min_fraction: float | None = None
    straggler_grace: float | None = None
    n_batch: int | None = None

    def given(self) -> dict[str, Any]:
        """The options that are set."""
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}


#: The ``max_tokens`` value that means no cap at all (``token_budget="none"``; the CLI's ``--max-tokens none``).
NO_CAP = "none"

#: The options that set a sampling field in every round (``params``, ``round_params``, ``synthesis_params``).
_SAMPLING_OPTIONS = ("temperature", "top_p", "max_tokens", "seed", "stop", "presence_penalty", "frequency_penalty")

#: Where each option lands: the settings field path (YAML names) it sets.
OVERRIDE_TARGETS: dict[str, str] = {
    "schedule": "schedule",
    **{name: f"sampling.{name}" for name in _SAMPLING_OPTIONS},
    "truncated": "compaction.truncated",
    "empty": "compaction.empty",
    "max_prompt_chars": "max_prompt_chars",
    "max_model_len": "max_model_len",
    "max_request_bytes": "max_request_bytes",
    "min_trajectories": "failure.min_trajectories",
    "min_fraction": "failure.min_fraction",
    "straggler_grace": "failure.straggler_grace",
    "n_batch": "n_batch",
    "response_format": "response_format",
}

#: The settings sections an option's path starts with, by their Python field names.
_SECTIONS = {"params", "round_params", "synthesis_params", "sampling", "round_sampling", "synthesis_sampling"}


def _shown(value: Any) -> str:
    if isinstance(value, Schedule):
        return repr(list(value.rounds))
    if isinstance(value, BaseModel):  # a ResponseFormat: as it was written
        return repr(value.model_dump(mode="json", by_alias=True, exclude_none=True))
    return repr(value)


def _problem(error: ErrorDetails) -> str:
    """A pydantic error's text as the spec loader writes it, with choices phrased as what to use."""
    if error["type"] == "literal_error":
        return f"use {(error.get('ctx') or {}).get('expected', 'one of the allowed values')}"
    return error["msg"].removeprefix("Value error, ")  # a SpecRuleError's message names its field


def _line(options: Mapping[str, Any], problem: str) -> str:
    named = ", ".join(f"{name}={_shown(value)}" for name, value in options.items())
    return f"invalid option{'s' if len(options) > 1 else ''} {named}: {problem}"


def override_field(option: str) -> FieldInfo:
    """The settings field an option sets (its type and constraints), e.g. ``SamplingParams.top_p`` for ``top_p``."""
    section, _, name = OVERRIDE_TARGETS[option].rpartition(".")
    models: dict[str, type[BaseModel]] = {
        "": PaCoReConfig,
        "sampling": SamplingParams,
        "compaction": CompactionPolicy,
        "failure": FailurePolicy,
    }
    return models[section].model_fields[name]


@functools.cache
def _field_adapter(option: str) -> TypeAdapter[Any]:
    """A validator for one option's value: the settings field it sets, on its own."""
    field = override_field(option)
    form: Any = Annotated[field.annotation, field]
    return TypeAdapter(form)


def check_override(option: str, value: Any) -> Any:
    """Check one option's value on its own (its type and range); return it, or raise :class:`ConfigError`.

    Rules across settings are checked when the overrides are applied. ``schedule`` is parsed with the default
    limits (a :class:`~pacore_graph.Schedule` instance is taken as already checked).
    """
    if option not in OVERRIDE_TARGETS:
        raise ConfigError(f"unknown option {option!r}; allowed: {', '.join(OVERRIDE_TARGETS)}")
    if value is None:
        return None
    if option == "schedule":
        return value if isinstance(value, Schedule) else Schedule.parse(value)
    if option == "max_tokens" and value == NO_CAP:
        return value
    try:
        return _field_adapter(option).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(_line({option: value}, "; ".join(_problem(e) for e in exc.errors()))) from None


def _overrides(overrides: Overrides | Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The given options, each checked on its own, by name."""
    merged = overrides.given() if isinstance(overrides, Overrides) else dict(overrides or {})
    merged.update({name: value for name, value in options.items() if value is not None})
    unknown = sorted(set(merged) - set(OVERRIDE_TARGETS))
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(OVERRIDE_TARGETS)}"
        )
    try:  # each value as its option's type (0 -> 0.0 for top_p), as the command line and the proxy parse it
        merged = Overrides.model_validate(merged).given()
    except ValidationError as exc:
        raise ConfigError("; ".join(_line({str(e["loc"][0]): e["input"]}, _problem(e)) for e in exc.errors())) from None
    checked: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in merged.items():
        try:
            checked[name] = check_override(name, value)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return {name: value for name, value in checked.items() if value is not None}


def _options_at(path: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The given options a settings error at ``path`` (Python or YAML names) is about."""
    parts = path.split(".")
    at = 2 if parts[0] in ("round_params", "round_sampling") else 1
    if parts[0] in _SECTIONS and len(parts) > at:  # a field of any sampling section: the option of that field
        path = f"sampling.{parts[at]}"
    exact = {name: value for name, value in given.items() if OVERRIDE_TARGETS[name] == path}
    return exact or {name: value for name, value in given.items() if OVERRIDE_TARGETS[name].startswith(f"{path}.")}


def _explain(exc: ValidationError, given: Mapping[str, Any]) -> str:
    """One line for the errors the overridden settings gave, each naming the options it is about."""
    lines: list[str] = []
    for error in exc.errors():
        field = getattr((error.get("ctx") or {}).get("error"), "field", None)  # a SpecRuleError's
        path = field or ".".join(str(part) for part in error["loc"])
        matched = _options_at(path, given) if path else {}
        problem = _problem(error)
        if not matched and path and not field:
            problem = f"{path}: {problem}"  # no option sets it: name the setting
        # A setting the options broke without setting it (round_sampling after a new schedule): name them all.
        line = _line(matched or dict(given), problem)
        if line not in lines:  # a sampling option fails once per round section; say it once
            lines.append(line)
    return "; ".join(lines)


def apply_overrides(
    config: _Config, overrides: Overrides | Mapping[str, Any] | None = None, /, **options: Any
) -> _Config:
    """``config`` (a :class:`~pacore_graph.PaCoReConfig` or a graph spec) with the options applied, re-validated.

    Raises :class:`ConfigError` naming the option for an unknown option, a bad value or a broken rule across
    settings (a schedule's own errors are its :class:`~pacore_graph.ScheduleError`).
    """
    given = _overrides(overrides, options)
    if not given:
        return config
    # Every field as it is (derived ones, such as template, are derived again).
    data = {name: getattr(config, name) for name, field in type(config).model_fields.items() if not field.exclude}
    sampling = {name: given[name] for name in _SAMPLING_OPTIONS if name in given}
    if sampling.get("max_tokens") == NO_CAP:
        sampling["max_tokens"] = None  # unset in every round, and no default budget either
        data["token_budget"] = "none"
    if sampling:
        # Each section as the fields it sets, plus the option; validation layers them over `params` again.
        data["params"] = {**config.params.model_dump(exclude_unset=True), **sampling}
        data["round_params"] = {
            r: {**p.model_dump(exclude_unset=True), **sampling} for r, p in config.round_params.items()
        }
        if config.synthesis_params is not None:
            data["synthesis_params"] = {**config.synthesis_params.model_dump(exclude_unset=True), **sampling}
    for option, value in given.items():
        section, _, name = OVERRIDE_TARGETS[option].rpartition(".")
        if section in ("compaction", "failure"):
            current = data[section]
            data[section] = {
                **(current.model_dump(exclude_unset=True) if isinstance(current, BaseModel) else current),
                name: value,
            }
        elif not section:
            data[name] = value
    try:
        return type(config).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, given)) from None
