"""The eval's JSONL files under attack: line separators in model output, and the partial-line repair after a kill."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.eval.jsonl import append_record, read_records
from pacore_graph.testing import FakeOpenAIServer, FakeReply

#: Every separator str.splitlines() cuts at, besides \n: JSON leaves the non-control ones unescaped in strings.
SEPARATORS = "\r \x0b \x0c \x1c \x1d \x1e \x85 \u2028 \u2029"


class Row(BaseModel):
    text: str


def test_line_separators_in_records_round_trip(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [Row(text=f"before{SEPARATORS}after"), Row(text="\u2028"), Row(text="plain")]
    for row in rows:
        append_record(path, row)
    assert list(read_records(path, Row, "a row")) == rows


def test_the_partial_line_repair_replaces_the_file_and_never_truncates_it_in_place(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_record(path, Row(text="kept"))
    path.write_bytes(path.read_bytes() + b'{"text": "cut mid-wri')  # a kill mid-append
    before = path.read_bytes()
    witness = tmp_path / "witness"
    os.link(path, witness)  # the old inode: an in-place truncation would change it
    assert list(read_records(path, Row, "a row")) == [Row(text="kept")]
    assert path.read_bytes() == b'{"text":"kept"}\n'
    assert witness.read_bytes() == before  # the original file was never rewritten
    assert os.stat(path).st_ino != os.stat(witness).st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "witness"]  # no temporary file left


def test_a_repair_that_fails_midway_leaves_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    append_record(path, Row(text="kept"))
    path.write_bytes(path.read_bytes() + b'{"text": "cut')
    before = path.read_bytes()

    def full_disk(fd: int) -> None:  # fault injection: the disk fails while the repaired copy is synced
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        list(read_records(path, Row, "a row"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_an_eval_whose_answers_hold_line_separators_resumes(tmp_path):
    answer = f"The answer is 5.{SEPARATORS} (that is all)"
    out = tmp_path / "out"

    def run():
        with FakeOpenAIServer(lambda request: FakeReply(content=answer)).in_thread() as server:
            args = [
                "eval", "--dataset", "builtin:arith?n=3", "--graph", "pacore-low:1", "--runs", "1",
                "--no-pool", "--out", str(out), "--base-url", server.base_url,
            ]  # fmt: skip
            result = CliRunner().invoke(app, args, catch_exceptions=False)
            return result, len(server.requests)

    first, asked = run()
    assert first.exit_code == 0, first.output
    assert asked == 3 * 2  # one explorer and the synthesis per problem
    again, asked_again = run()
    assert again.exit_code == 0, again.output
    assert asked_again == 0  # every run was read back as done
    assert "resuming: 3 of 3 runs" in again.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_bytes().decode().split("\n") if line]
    assert [record["answer"] for record in records] == [answer] * 3
