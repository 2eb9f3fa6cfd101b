"""The settings of one PaCoRe graph, modelled once and validated by pydantic.

:class:`PaCoReConfig` is what the nodes read, what a YAML graph spec holds (a spec is a name, a type and a
description on top of it) and what every override (command-line flags, the proxy's ``pacore`` options, Python)
is applied to, through :meth:`PaCoReConfig.with_overrides`. Each field has one Python name and, where the YAML
spells it differently, an alias; both are accepted, dumps use the YAML names:

======================  ======================  =====================================================
Python                  YAML                    what
======================  ======================  =====================================================
``params``              ``sampling``            sampling of every round
``round_params``        ``round_sampling``      per parallel round (1-based), over ``sampling``
``synthesis_params``    ``synthesis_sampling``  the final round, over ``sampling``
``extraction``          ``answer``              how voting graphs read an answer from a conclusion
``template`` (text)     ``prompt.template``     P(x, M): ``official`` or a jinja2 template
======================  ======================  =====================================================

Sampling is layered: ``round_params``/``synthesis_params`` override only the fields they set (in YAML the keys
they give, in Python the fields passed to ``SamplingParams``); the unset ones come from ``params``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from pacore_graph.budget import DEFAULT_MAX_REQUEST_BYTES
from pacore_graph.clients.base import SamplingParams
from pacore_graph.compaction import CompactionPolicy
from pacore_graph.errors import ConfigError
from pacore_graph.extract import ExtractionPolicy
from pacore_graph.prompts import REFERENCE_TEMPLATE, render_references
from pacore_graph.schedule import Schedule
from pacore_graph.structured import ResponseFormat

if TYPE_CHECKING:
    from pacore_graph.overrides import Overrides

__all__ = ["OFFICIAL_TEMPLATE", "FailurePolicy", "PaCoReConfig", "PromptSpec", "SpecRuleError"]

#: The ``prompt.template`` value that means the template PaCoRe-8B was trained on.
OFFICIAL_TEMPLATE = "official"


class SpecRuleError(ConfigError):
    """A rule across settings was broken; ``field`` is the path it is reported under (e.g. ``round_sampling``).

    Raised inside validators (pydantic reports it as a value error); the message starts with the field, unless
    the rule's own sentence already does.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message if message.startswith(f"{field} ") else f"{field}: {message}")
        self.field = field


class FailurePolicy(BaseModel):
    """How many trajectories of a parallel round may fail, after the client's retries, before the round fails.

    By default none may: the first failed request fails the run (its siblings are cancelled). Set
    ``min_trajectories`` and/or ``min_fraction`` (of K; with both, the stricter wins; never more than K) to let a
    round go on with what came back: a failed explorer then returns a marker instead of raising, so its
    siblings keep running, and the round fails with :class:`~pacore_graph.errors.QuorumError` (naming each
    failure) only when fewer than the quorum came back. Every failure is counted in the round's ``failed`` and
    recorded in the trace; K itself never shrinks. The final synthesis (K = 1) always needs its one trajectory.

    ``straggler_grace`` (seconds, needs a quorum) is the straggler cutoff: once a round's quorum has come back,
    the round waits that long more, then cancels the explorers still running and records each as failed
    ("cut off as a straggler"), so one slow request cannot hold up the whole round.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_trajectories: int | None = Field(None, ge=1)
    min_fraction: float | None = Field(None, gt=0.0, le=1.0)
    straggler_grace: float | None = Field(None, ge=0.0)

    @model_validator(mode="after")
    def _grace_needs_a_quorum(self) -> FailurePolicy:
        if self.straggler_grace is not None and not self.tolerant:
            raise ValueError(
                "straggler_grace closes a round once its quorum is back, so it needs a quorum: "
                "set min_trajectories or min_fraction too"
            )
        return self

    @property
    def tolerant(self) -> bool:
        """Whether any failure may be tolerated (a quorum is set)."""
        return self.min_trajectories is not None or self.min_fraction is not None

    def quorum(self, k: int) -> int:
        """How many of a round's ``k`` trajectories must come back."""
        if not self.tolerant:
            return k
        need = max(self.min_trajectories or 1, math.ceil((self.min_fraction or 0.0) * k - 1e-9))
        return min(need, k)


class PromptSpec(BaseModel):
    """The synthesis prompt P(x, M): ``official`` (the default), or a jinja2 template using ``original_prompt``
    and ``ref_responses``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = OFFICIAL_TEMPLATE

    @field_validator("template")
    @classmethod
    def _renders(cls, template: str) -> str:
        if template in (OFFICIAL_TEMPLATE, REFERENCE_TEMPLATE):
            return OFFICIAL_TEMPLATE  # the official text given verbatim is still the official template
        if "ref_responses" not in template:
            raise ValueError("the template never uses ref_responses, so the references would be lost")
        try:
            render_references("problem", ["reference"], template)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return template

    @property
    def text(self) -> str:
        """The jinja2 source of the template."""
        return REFERENCE_TEMPLATE if self.template == OFFICIAL_TEMPLATE else self.template


#: The sampling sections, each as (Python name, YAML name); the first is the base the others are layered on.
_SAMPLING = (("params", "sampling"), ("round_params", "round_sampling"), ("synthesis_params", "synthesis_sampling"))


def _take(data: dict[str, Any], name: str, alias: str) -> tuple[str | None, Any]:
    """Which of a field's two spellings ``data`` uses, and its value; both at once is an error."""
    if name in data and alias in data:
        raise SpecRuleError(alias, f"is also given as {name}; give one of {alias} and {name}")
    key = alias if alias in data else name if name in data else None
    return key, data.get(key) if key is not None else None


def _layered(base: dict[str, Any], section: Any) -> Any:
    """A per-round sampling section with its unset fields taken from ``base`` (anything else is left to fail)."""
    if isinstance(section, SamplingParams):
        section = section.model_dump(exclude_unset=True)
    return {**base, **section} if isinstance(section, dict) else section


class PaCoReConfig(BaseModel):
    """Everything that shapes a PaCoRe run, apart from the backend (see the module docstring for the names).

    ``params`` apply to every parallel round unless ``round_params`` has an entry for that round (1-based);
    ``synthesis_params`` (default: ``params``) apply to the final one; both override only the fields they set.
    ``prompt`` is P(x, M); ``template``, its jinja2 text, is derived from it (or given instead of it).
    ``max_prompt_chars`` caps the text of any single prompt: a round whose prompt would exceed it fails before
    anything is sent. ``max_model_len`` (the model's context, in tokens) makes every prompt fit
    ``max_model_len - max_tokens``, trimming references as :mod:`pacore_graph.budget` documents.
    ``token_budget`` is each request's ``max_tokens`` when the sampling leaves it unset or too large: ``fit``
    (the default) sends what fits, the context (``max_model_len``, else the server's own) minus the prompt's
    tokens, capped by the backend's default (the embedded engine's 1024 tokens); ``none`` sends the sampling's
    ``max_tokens`` as given, and none when unset (no cap: the server's default). See :mod:`pacore_graph.budget`.
    ``max_request_bytes`` caps the JSON of one request's messages (images included; default 32 MiB): a round
    whose requests would be larger fails before any is sent, saying how much it would send. ``extraction``
    is how voting graphs read an answer from a conclusion. ``failure`` is the partial-failure policy (a quorum
    per round; by default any failed request fails the run).

    ``n_batch`` turns on n-batching (request shaping for vLLM; default off): the K explorers of a round share one
    prompt and params, so they are sent as ``ceil(K / n_batch)`` requests of ``n`` choices (chunks of at most
    ``n_batch``) instead of K requests, and the server prefills the prompt once per request. Each request is
    sent with the seed of its first trajectory (``seed + offset``); the server derives each choice's randomness
    from it, so a seeded run is reproducible but draws other samples than without n-batching. The request's
    prompt tokens are counted once, on its first trajectory; its completion tokens are split evenly over its
    choices (the remainder on the first), since the server reports one usage per request. A failed request
    fails all its trajectories. It does not combine with the straggler cutoff (one request cannot be cut per
    choice).

    ``response_format`` (OpenAI's, see :mod:`pacore_graph.structured`; a pydantic model class stands for its
    schema) constrains the answer: it is sent on the final synthesis request only (vLLM guided decoding).

    Change settings with :meth:`with_overrides`, the one path the command line and the proxy use too.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    schedule: Schedule = Field(default_factory=lambda: Schedule.parse("low"))
    params: SamplingParams = Field(SamplingParams(), alias="sampling")
    round_params: dict[int, SamplingParams] = Field(default_factory=dict, alias="round_sampling")
    synthesis_params: SamplingParams | None = Field(None, alias="synthesis_sampling")
    prompt: PromptSpec = PromptSpec()
    #: The jinja2 text of ``prompt``, which the nodes render; derived from ``prompt`` (or given instead of it).
    template: str = Field(REFERENCE_TEMPLATE, exclude=True)
    compaction: CompactionPolicy = CompactionPolicy()
    extraction: ExtractionPolicy = Field(ExtractionPolicy(), alias="answer")
    max_prompt_chars: int | None = Field(None, gt=0)
    max_model_len: int | None = Field(None, gt=0)
    token_budget: Literal["fit", "none"] = Field(
        "fit",
        description=(
            "max_tokens when the sampling leaves it unset or too large: 'fit' (default) sends what fits, the context "
            "minus the prompt, capped by the backend's default (the embedded engine's 1024); 'none' sends it as given"
        ),
    )
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, gt=0)
    failure: FailurePolicy = FailurePolicy()
    n_batch: int | None = Field(None, ge=1)
    #: The answer's format (OpenAI ``response_format``), sent on the final synthesis only (see final_params).
    response_format: ResponseFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _template_and_layers(cls, data: Any) -> Any:
        """Take ``template=`` text as ``prompt``, and fill each per-round section's unset fields from ``params``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "template" in data:
            if "prompt" in data:
                raise SpecRuleError("prompt", "is also given as template; give one of prompt and template")
            data["prompt"] = {"template": data.pop("template")}  # checked there, and reported as prompt.template
        prompt = data.get("prompt")
        source = prompt.get("template") if isinstance(prompt, dict) else getattr(prompt, "template", None)
        if isinstance(source, str):
            data["template"] = REFERENCE_TEMPLATE if source == OFFICIAL_TEMPLATE else source
        base_key, base = _take(data, *_SAMPLING[0])
        if base_key is None:
            base = {}
        elif isinstance(base, SamplingParams):
            base = base.model_dump()
        try:
            SamplingParams.model_validate(base)
        except ValueError:
            return data  # reported once, under the base section
        rounds_key, rounds = _take(data, *_SAMPLING[1])
        if rounds_key is not None and isinstance(rounds, dict):
            data[rounds_key] = {r: _layered(base, section) for r, section in rounds.items()}
        final_key, final = _take(data, *_SAMPLING[2])
        if final_key is not None:
            data[final_key] = _layered(base, final)
        return data

    @model_validator(mode="after")
    def _round_params_name_parallel_rounds(self) -> Self:
        parallel = len(self.schedule.rounds)
        outside = sorted(r for r in self.round_params if not 1 <= r <= parallel)
        if outside:
            raise SpecRuleError(
                "round_sampling",
                f"round(s) {outside} are not parallel rounds of schedule {self.schedule.spec!r} (1..{parallel}); "
                "set the final round with synthesis_sampling",
            )
        return self

    @model_validator(mode="after")
    def _n_batch_without_straggler_cutoff(self) -> Self:
        # A straggler is one choice of an n-choice request: it cannot be cancelled alone.
        if self.n_batch is not None and self.failure.straggler_grace is not None:
            raise SpecRuleError(
                "n_batch",
                "n_batch and failure.straggler_grace do not combine (a request of n choices cannot be cut off "
                "choice by choice): unset one of them",
            )
        return self

    @field_serializer("schedule")
    def _schedule_as_list(self, schedule: Schedule) -> list[int]:
        return list(schedule.rounds)

    @property
    def final_params(self) -> SamplingParams:
        """The sampling params of the final synthesis round, with ``response_format`` (if it constrains the answer)
        in ``extra``: only the synthesis is constrained, the explorers reason freely (:mod:`pacore_graph.structured`).
        """
        params = self.synthesis_params or self.params
        if self.response_format is None or not self.response_format.constrains:
            return params
        return params.model_copy(update={"extra": {**params.extra, "response_format": self.response_format.wire()}})

    def params_for_round(self, round_number: int) -> SamplingParams:
        """The sampling params of parallel round ``round_number`` (1-based)."""
        return self.round_params.get(round_number, self.params)

    def with_overrides(self, overrides: Overrides | Mapping[str, Any] | None = None, /, **options: Any) -> Self:
        """A copy with the given options applied and everything re-validated; raises :class:`ConfigError`.

        The options (see :class:`~pacore_graph.overrides.Overrides`) are flat: ``schedule``, the sampling fields
        (``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``: set in *every* round, per-round and
        synthesis sections included), ``truncated``, ``max_prompt_chars``, ``max_model_len``, the quorum
        (``min_trajectories``, ``min_fraction``, ``straggler_grace``) and ``n_batch``; ``None`` leaves a setting
        as it is. The command line and the proxy's ``pacore`` options go through here too, so a bad value gives
        the same message from each. A :class:`~pacore_graph.Schedule` instance is taken as already checked
        (limits raised with ``Schedule.parse`` stick); other forms are parsed with the default limits.
        """
        from pacore_graph.overrides import apply_overrides  # imported here: that module builds on this one

        return apply_overrides(self, overrides, **options)
