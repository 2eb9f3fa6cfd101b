"""Structured output: the OpenAI ``response_format`` a run's answer must follow, checked before anything is sent.

A :class:`ResponseFormat` is ``{"type": "text"}`` (free text, the default), ``{"type": "json_object"}`` (any JSON
object) or ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": true}}``. PaCoRe sends
it upstream on the **final synthesis only** (vLLM turns it into guided decoding, so the answer parses); the
explorers of the parallel rounds reason freely, since their conclusions are references for the synthesis, not the
answer. The schema itself is checked with ``jsonschema`` (its metaschema), so a broken schema is a
:class:`~pacore_graph.errors.ConfigError` (a 400 at the proxy) and no request is made.

In Python, a pydantic model class stands for its JSON schema::

    config.with_overrides(response_format=Answer)   # Answer(BaseModel): the schema of Answer, strict
    Answer.model_validate_json(result.answer)
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["JSONSchemaFormat", "ResponseFormat"]


class JSONSchemaFormat(BaseModel):
    """The ``json_schema`` member of a ``response_format``: a named JSON schema (OpenAI's names and limits)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_is_valid(self) -> Self:
        import jsonschema  # here: a CLI start-up (`pacore --help`) should not pay for it

        try:
            jsonschema.validators.validator_for(self.schema_).check_schema(self.schema_)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) or "the root"
            raise ValueError(
                f"json_schema.schema is not a valid JSON schema: {exc.message} (at {where}); fix the schema"
            ) from None
        return self


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``; a pydantic model class is taken as the strict JSON schema of that model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_model_class(cls, data: Any) -> Any:
        if isinstance(data, type) and issubclass(data, BaseModel):
            return {
                "type": "json_schema",
                "json_schema": {"name": data.__name__[:64], "schema": data.model_json_schema(), "strict": True},
            }
        return data

    @model_validator(mode="after")
    def _schema_given_for_json_schema(self) -> Self:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError(
                "give json_schema with type 'json_schema' (and only then): "
                '{"type": "json_schema", "json_schema": {"name": "...", "schema": {...}}}'
            )
        return self

    @property
    def constrains(self) -> bool:
        """Whether this format constrains the answer (anything but ``text``)."""
        return self.type != "text"

    def wire(self) -> dict[str, Any]:
        """The JSON sent upstream as the request's ``response_format``."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
