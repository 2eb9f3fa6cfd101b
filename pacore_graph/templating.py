"""Rendering prompt templates within bounds: jinja2's sandbox with output-size, time and operator limits.

The limits (:data:`~pacore_graph.prompts.MAX_RENDER_CHARS`, :data:`~pacore_graph.prompts.MAX_RENDER_SECONDS`)
are documented in :mod:`pacore_graph.prompts`, whose ``render_references`` is the way in. This module is
imported on first render, so importing the prompts (and every ``pacore --help``) does not load jinja2.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import jinja2
import jinja2.sandbox

from pacore_graph.errors import ConfigError
from pacore_graph.prompts import MAX_RENDER_CHARS, MAX_RENDER_SECONDS

__all__ = ["render_template"]


def render_template(template: str, context: dict[str, Any], *, trusted: bool = False) -> str:
    """Render ``template`` with ``context``; a ``trusted`` one (the built-in template, linear in its inputs) is not
    timed. Raises :class:`~pacore_graph.errors.ConfigError` for a template over a bound or with a syntax error."""
    try:
        if trusted:
            return _compile(template).render(**context)
        return _render(_compile(template), context)
    except _RenderLimit as exc:
        raise ConfigError(f"the prompt template {exc}; simplify it") from None
    except MemoryError:
        raise ConfigError(f"the prompt template ran out of memory (over {MAX_RENDER_CHARS} characters?)") from None
    except jinja2.TemplateError as exc:
        raise ConfigError(f"the prompt template cannot be rendered: {exc}; check its jinja2 syntax") from exc


_BIG_WIDTH = re.compile(rf"\d{{{len(str(MAX_RENDER_CHARS)) + 1},}}")


class _RenderLimit(jinja2.exceptions.SecurityError):
    """A template went over a rendering bound."""


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    # Compiling costs ~1 ms, more than rendering; a graph renders the same few templates once per round.
    return _BoundedEnvironment().from_string(template)


def _render(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render, stopping the template's code after ``MAX_RENDER_SECONDS`` and the output at ``MAX_RENDER_CHARS``."""
    deadline = time.monotonic() + MAX_RENDER_SECONDS
    filename = template.filename or "<template>"

    def each_line(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise _RenderLimit(f"took more than {MAX_RENDER_SECONDS:g} s to render")
        return each_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        # Only the template's compiled code is timed: its loops are where rendering can spin without bound.
        return each_line if frame.f_code.co_filename == filename else None

    pieces: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        for piece in template.generate(**context):
            size += len(piece)
            if size > MAX_RENDER_CHARS:
                raise _RenderLimit(f"renders more than {MAX_RENDER_CHARS} characters")
            pieces.append(piece)
    finally:
        sys.settrace(previous)
    return "".join(pieces)


def _check_size(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_RENDER_CHARS:
        raise _RenderLimit(f"builds a value of more than {MAX_RENDER_CHARS} items")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RENDER_CHARS:
        raise _RenderLimit(f"uses a number over {MAX_RENDER_CHARS}")
    return value


def _check_count(count: int) -> None:
    if count > MAX_RENDER_CHARS:
        raise _RenderLimit(f"builds a value of more than {MAX_RENDER_CHARS} items")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _BIG_WIDTH.search(text):
        raise _RenderLimit(f"formats with a width or precision over {MAX_RENDER_CHARS}")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja_pass_arg, so context-taking filters still get it
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                _check_size(value)
        if name == "format":
            _check_format(next((a for a in args if isinstance(a, str)), None))
        if name == "replace":
            strings = [a for a in args if isinstance(a, str)]
            if len(strings) >= 3 and strings[1]:
                _check_count(len(strings[0]) + strings[0].count(strings[1]) * len(strings[2]))
        return _check_size(function(*args, **kwargs))

    return bounded


class _BoundedEnvironment(jinja2.sandbox.SandboxedEnvironment):
    """jinja2's sandbox with size bounds on operators, filters and calls (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self) -> None:
        super().__init__()
        self.globals.pop("lipsum", None)  # generates text in a Python loop the deadline does not see
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        """``*``, ``**`` and ``%`` with their results' sizes checked before they are computed."""
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                    _check_count(len(sequence) * times)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * math.log2(abs(left)) > 4096:
                raise _RenderLimit("raises a number to a power with more than 4096 bits")
        elif operator == "%":
            _check_format(left)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """A call from the template, with number arguments and ``str.format`` widths checked."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                _check_size(value)
        wrapped = getattr(__obj, "__wrapped__", None)
        if wrapped is not None and isinstance(getattr(wrapped, "__self__", None), str):
            _check_format(wrapped.__self__)  # str.format and format_map
        return _check_size(super().call(__context, __obj, *args, **kwargs))
