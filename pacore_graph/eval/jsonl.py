"""Append-only JSONL files that survive a kill: the eval's results log and its trajectory pool.

Each record is one line, flushed and fsynced before the write returns. A kill mid-write can only leave a partial
last line; reading drops it, so the next append starts cleanly. The repair never truncates the file in place: the
full lines are written to a temporary file beside it, fsynced, and renamed over it (then the folder is fsynced), so
a kill during the repair leaves the old file or the repaired one, never less.

Lines are split on ``\n`` only: model output holds other line separators (U+2028, U+0085, form feeds), which JSON
keeps unescaped inside strings, and ``str.splitlines`` would cut a record there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from pacore_graph.errors import ConfigError

__all__ = ["append_record", "read_records"]

RecordT = TypeVar("RecordT", bound=BaseModel)


def read_records(path: Path, record_type: type[RecordT], what: str) -> Iterator[RecordT]:
    """The records in ``path``, in order; a line that is not a ``record_type`` fails naming the line and ``what``."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        _replace(path, data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: byte {exc.start} is not UTF-8 (expected one {what} per line)") from None
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield record_type.model_validate_json(line)
        except ValueError as exc:
            raise ConfigError(f"{path}: line {number} is not {what} ({exc})") from None


def _replace(path: Path, data: bytes) -> None:
    """Atomically make ``data`` the content of ``path``: a fsynced temporary file renamed over it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, path.stat().st_mode & 0o777)  # mkstemp makes it private; keep the file's own mode
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself is durable
    finally:
        os.close(folder)


def append_record(path: Path, record: BaseModel) -> None:
    """Append ``record`` as one line, durably (flushed and fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(record.model_dump_json() + "\n")
        file.flush()
        os.fsync(file.fileno())
