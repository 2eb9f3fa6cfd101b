"""Append-only JSONL files that survive a kill: the eval's results log and its trajectory pool.

Each record is one line, flushed and fsynced before the write returns. A kill mid-write can only leave a partial
last line; reading drops it (and truncates the file to the last full line), so the next append starts cleanly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from pacore_graph.errors import ConfigError

__all__ = ["append_record", "read_records"]

RecordT = TypeVar("RecordT", bound=BaseModel)


def read_records(path: Path, record_type: type[RecordT], what: str) -> Iterator[RecordT]:
    """The records in ``path``, in order; a line that is not a ``record_type`` fails naming the line and ``what``."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield record_type.model_validate_json(line)
        except ValueError as exc:
            raise ConfigError(f"{path}: line {number} is not {what} ({exc})") from None


def append_record(path: Path, record: BaseModel) -> None:
    """Append ``record`` as one line, durably (flushed and fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(record.model_dump_json() + "\n")
        file.flush()
        os.fsync(file.fileno())
