"""Lazy re-exports (PEP 562) for the package ``__init__`` modules.

A package says which names it re-exports from which module; each module is imported on the first access to one of
its names. ``import pacore_graph`` (and with it every ``pacore`` command's start-up) then costs no LangGraph,
LangChain or aiohttp import until a name that needs them is used. The package keeps the same imports under
``TYPE_CHECKING`` so that type checkers see every re-export.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, sources: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` of ``package``, which re-exports ``sources`` (module -> names)."""
    where = {name: module for module, names in sources.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later look-ups find it without calling __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
