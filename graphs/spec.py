"""Declarative graph specs: a YAML file names a graph type, a schedule, sampling, the prompt and compaction.

A :class:`GraphSpec` is a graph's identity (``name``, ``type``, ``description``) on top of the core settings
model :class:`~pacore_graph.PaCoReConfig`, whose YAML names (``sampling``, ``answer``, ``prompt.template``, ...)
it is written in; the YAML stays flat. Every model forbids unknown keys, and a malformed spec raises
:class:`GraphSpecError` with one line naming the file, the field path and what is allowed, e.g.::

    my.yaml: compaction.keep: Input should be 'conclusion' or 'full' (got 'partial')

Sampling is layered: ``sampling`` applies to every round; ``round_sampling`` (keyed by the 1-based parallel
round) and ``synthesis_sampling`` (the final round) override only the fields they set. The resolved spec
(``pacore graphs show``) has the layers merged, and reloads to the same spec.

A spec is at most :data:`MAX_SPEC_BYTES` long, and its YAML aliases may expand it to at most
:data:`MAX_SPEC_EXPANDED` (nodes plus scalar characters, counted before anything is built), so an alias bomb
("billion laughs") fails at once with one line. Its template is rendered within the bounds of
:mod:`pacore_graph.prompts`.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from pacore_graph.config import OFFICIAL_TEMPLATE, PaCoReConfig, PromptSpec, SpecRuleError
from pacore_graph.errors import ConfigError
from pacore_graph.schedule import Schedule

from .kinds import graph_types

__all__ = [
    "MAX_SPEC_BYTES",
    "MAX_SPEC_EXPANDED",
    "OFFICIAL_TEMPLATE",
    "GraphSpec",
    "GraphSpecError",
    "PromptSpec",
    "SpecRuleError",
    "dump_spec",
    "load_spec_file",
    "parse_spec",
    "parse_spec_text",
]

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

#: The fields a spec adds to the settings, written first.
_IDENTITY = ("name", "description", "type")
#: The largest spec document, in bytes of UTF-8.
MAX_SPEC_BYTES = 1024 * 1024
#: The largest a spec may become once its aliases are expanded: YAML nodes plus the characters of its scalars.
MAX_SPEC_EXPANDED = 2 * 1024 * 1024


class GraphSpecError(ConfigError):
    """A graph spec that cannot be loaded: bad YAML, an unknown key, a bad value, or an unknown graph name."""


class GraphSpec(PaCoReConfig):
    """One reasoning graph, declared: its identity (``name``, which builder ``type`` assembles it, a
    ``description``) and its settings, the fields of :class:`~pacore_graph.PaCoReConfig` under their YAML names.

    ``sampling``/``round_sampling``/``synthesis_sampling`` are the sampling (layered: see the module docstring);
    ``prompt.template`` is P(x, M); ``answer`` is how a voter reads an answer from a conclusion;
    ``max_prompt_chars`` caps every prompt, so an over-long one fails before it is sent; ``failure`` is the
    per-round quorum (by default any failed request fails the run); ``max_model_len`` (tokens) makes every
    prompt fit the model's context, trimming references; ``n_batch`` sends a round's explorers as requests of at
    most that many choices (``n``; default off). The settings' Python names (``params``, ``extraction``, ...)
    work as attributes, and :meth:`to_config` gives the plain settings.
    """

    name: str = Field(pattern=_NAME_PATTERN)
    description: str = ""
    type: str
    schedule: Schedule  # a spec must say it; the settings model alone defaults to low

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        known = graph_types()
        if value not in known:
            raise ValueError(f"unknown graph type {value!r}; allowed: {', '.join(sorted(known))}")
        return value

    @model_validator(mode="after")
    def _type_rules(self) -> GraphSpec:
        kind = graph_types()[self.type]
        if kind.check is not None:
            kind.check(self)
        return self

    @model_serializer(mode="wrap")
    def _identity_first(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {**{key: data[key] for key in _IDENTITY if key in data}, **data}

    def to_config(self) -> PaCoReConfig:
        """The core :class:`~pacore_graph.PaCoReConfig` this spec describes (its settings, without the identity)."""
        values = {name: getattr(self, name) for name in PaCoReConfig.model_fields}
        return PaCoReConfig.model_construct(_fields_set=self.model_fields_set & set(values), **values)


def _unwrap(annotation: Any) -> Any:
    """The model or container inside ``X | None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                return arg
    return annotation


def _model_at(path: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model a validation error path points into, for listing its allowed keys."""
    current: Any = GraphSpec
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _fields(current).get(str(part)) or current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) in (list, tuple):
            current = get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the name specs use (the alias where there is one), identity fields first."""
    named = {field.alias or name: field for name, field in model.model_fields.items() if not field.exclude}
    first = {key: named.pop(key) for key in _IDENTITY if issubclass(model, GraphSpec) and key in named}
    return {**first, **named}


def _describe(error: ErrorDetails) -> str:
    """One validation error as ``path: problem``, saying what is allowed where that helps."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SpecRuleError):
        return str(cause)  # it names its field
    path = ".".join(str(part) for part in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = f"; allowed: {', '.join(_fields(model))}" if model is not None else ""
        return f"{path}: unknown field{allowed}"
    if kind == "model_type":
        model = _model_at(loc)
        fields = f" with fields {', '.join(_fields(model))}" if model is not None else ""
        return f"{path}: expected a mapping{fields} (got {type(error.get('input')).__name__})"
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return f"name: use letters, digits, '.', '_' and '-', starting with a letter or digit (got {error['input']!r})"
    if kind == "missing":
        hint = f"; one of: {', '.join(sorted(graph_types()))}" if loc == ("type",) else ""
        return f"{path}: required field is missing{hint}"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool) and len(repr(value)) <= 80:
        message += f" (got {value!r})"
    return f"{path}: {message}"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def parse_spec(data: Any, *, source: str) -> GraphSpec:
    """Validate already-parsed spec data; raise :class:`GraphSpecError` naming ``source`` and the field."""
    if not isinstance(data, Mapping):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise GraphSpecError(
            f"{source}: a graph spec must be a mapping of fields (name, type, schedule, ...), got {found}"
        )
    try:
        return GraphSpec.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise GraphSpecError(_one_line(f"{source}: {problems}")) from None


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys, which plain YAML silently resolves to the last one."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}; each field may appear once", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _expanded_size(root: yaml.Node, source: str) -> int:
    """What ``root`` costs once its aliases are expanded (nodes plus scalar characters); memoized, no recursion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return []

    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            sizes[key] = size = 1 + own + sum(sizes[id(child)] for child in children(node))
            if size > MAX_SPEC_EXPANDED:
                raise GraphSpecError(
                    f"{source}: the spec expands to more than {MAX_SPEC_EXPANDED} nodes and characters through "
                    "YAML aliases (an alias bomb?); write the values out instead"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise GraphSpecError(f"{source}: a YAML alias refers to a node that contains it; remove the recursion")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _load_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text``, within the size and alias expansion limits (see the module docstring)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise GraphSpecError(f"{source}: the spec is {size} bytes, over the limit of {MAX_SPEC_BYTES}")
    loader = _StrictLoader(text)  # safe: a SafeLoader subclass
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise GraphSpecError(f"{source}: the spec nests too deeply; flatten it") from None
    finally:
        loader.dispose()


def parse_spec_text(text: str, *, source: str, default_name: str | None = None) -> GraphSpec:
    """Parse and validate YAML text; ``default_name`` fills a missing ``name`` (e.g. the file name)."""
    try:
        data = _load_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f" ({context})" if context else ""
        raise GraphSpecError(_one_line(f"{where}: invalid YAML: {problem}{detail}")) from None
    if isinstance(data, dict) and default_name is not None:
        data.setdefault("name", default_name)
    return parse_spec(data, source=source)


def load_spec_file(path: str | os.PathLike[str]) -> GraphSpec:
    """Load a spec from a YAML file; its ``name`` defaults to the file name without ``.yaml``."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_SPEC_BYTES + 1)  # no more: a huge file is refused without being read whole
        if len(data) > MAX_SPEC_BYTES:
            raise GraphSpecError(f"{path}: the spec is over the limit of {MAX_SPEC_BYTES} bytes")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise GraphSpecError(f"{path}: no such graph spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphSpecError(_one_line(f"{path}: cannot read the graph spec: {exc}")) from None
    return parse_spec_text(text, source=str(path), default_name=file.stem)


class _SpecDumper(yaml.SafeDumper):
    """Writes lists of numbers inline (``schedule: [32, 4]``), everything else in block style."""


def _represent_list(dumper: _SpecDumper, items: list[Any]) -> yaml.Node:
    inline = all(isinstance(item, int | float) and not isinstance(item, bool) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=inline)


_SpecDumper.add_representer(list, _represent_list)


def dump_spec(spec: GraphSpec) -> str:
    """The resolved spec as YAML (every field, layers merged); loading it back gives an equal spec."""
    data = spec.model_dump(mode="json")
    data["round_sampling"] = {int(r): section for r, section in data["round_sampling"].items()}
    return yaml.dump(data, Dumper=_SpecDumper, sort_keys=False, allow_unicode=True, width=120)
