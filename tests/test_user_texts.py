"""What the README, the help and the progress texts tell a user agree with each other and with the program."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.engine.launcher import START_PHASE, START_SECONDS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_the_engine_start_time_is_the_same_in_the_readme_and_the_spinner():
    assert START_SECONDS in START_PHASE
    assert f"each engine start takes {START_SECONDS}" in README
    assert f"start-up usually takes {START_SECONDS}" in README
    assert "half a minute" not in README


@pytest.mark.parametrize("command", ["run", "eval"])
def test_the_schedule_help_says_the_graphs_default_as_the_readme_does(command):
    help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    schedule = next(line for line in help_text.splitlines() if "--schedule" in line)
    assert "(default: the graph's)" in schedule
    assert not re.search(r"\[default: *(low|\[4\])", help_text)
    assert "(default: the graph's, `[4]` for `pacore-low`)" in README
