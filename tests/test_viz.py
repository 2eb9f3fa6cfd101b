"""`pacore trace view|plot` and `pacore graphs draw`: files a user can open, made without any network."""

import importlib.util
import re
import sys

import pytest
from typer.testing import CliRunner

from pacore_graph import SamplingParams, build_pacore_graph, record_run
from pacore_graph.cli.main import app
from pacore_graph.testing import FunctionBackend
from pacore_graph.viz import render_trace_html

PNG = b"\x89PNG\r\n\x1a\n"


def answer_by_seed(messages, params):
    return f"<think>t <b>&</b></think>It is \\boxed{{{params.seed % 3}}}."


@pytest.fixture
async def trace_file(tmp_path):
    graph = build_pacore_graph(FunctionBackend(answer_by_seed), "4,2", params=SamplingParams(seed=0))
    trace = await record_run(graph, {"problem": "What is <x> & y?"}, graph_name="pacore-demo")
    return trace.write(tmp_path / "run.json")


def cli(*args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_view_writes_one_self_contained_page_with_a_card_per_trajectory(trace_file, tmp_path):
    out = tmp_path / "run.html"
    result = cli("trace", "view", str(trace_file), "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert len(re.findall(r'<div class="card ', page)) == 7
    assert page.count('<section class="round">') == 3
    assert "Final synthesis" in page and "shown to the next round" in page and "<svg" in page
    # Nothing to fetch: no external script, stylesheet, image, font or import.
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]  # the SVG namespace only
    # User text is escaped, never markup.
    assert "What is &lt;x&gt; &amp; y?" in page and "<b>&</b>" not in page


def test_without_out_the_page_and_the_png_are_named_after_the_trace(trace_file, tmp_path):
    trace = trace_file.rename(tmp_path / "trace.json")
    result = cli("trace", "view", str(trace))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "trace.html").read_text().startswith("<!DOCTYPE html>")
    assert not (tmp_path / "run.html").exists()
    if importlib.util.find_spec("matplotlib") is not None:
        assert cli("trace", "plot", str(trace)).exit_code == 0
        assert (tmp_path / "trace.png").read_bytes()[:8] == PNG


def test_cards_are_coloured_by_agreement(trace_file):
    from pacore_graph import Trace

    page = render_trace_html(Trace.read(trace_file))
    pairs = set(re.findall(r'style="--c:(#[0-9A-Fa-f]{6})" data-answer="(\d)"', page))
    answers = {answer for _, answer in pairs}
    assert len(answers) >= 2
    assert len(pairs) == len(answers) == len({colour for colour, _ in pairs})  # one colour per answer, distinct


def test_the_legend_explains_the_dashed_border_and_the_timeline_has_colours_of_its_own(trace_file):
    from pacore_graph import Trace

    trace = Trace.read(trace_file)
    page = render_trace_html(trace)
    rounds_legend = page.split('<div class="legend">', 1)[1].split("</div>", 1)[0]
    assert "dashed border: cut off by max_tokens" in rounds_legend
    answer_colours = set(re.findall(r'style="--c:(#[0-9A-Fa-f]{6})"', page))
    timeline = page.split("<h2>Request timeline</h2>", 1)[1].split("<h2>", 1)[0]
    bar_colours = set(re.findall(r'<rect [^>]*fill="(#[0-9A-Fa-f]{6})"', timeline))
    assert len(bar_colours) == 3  # round 1, round 2, the synthesis
    assert not bar_colours & (answer_colours | {"#bbbbbb"})  # no bar looks like an answer
    assert all(f"background:{colour}" in timeline for colour in bar_colours)  # and its legend names each
    assert "round 1" in timeline and "round 2" in timeline and "final synthesis" in timeline


def test_plot_writes_a_png(trace_file, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run.png"
    result = cli("trace", "plot", str(trace_file), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 20_000


def test_plot_without_matplotlib_prints_the_install_hint(trace_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = cli("trace", "plot", str(trace_file), "--out", str(tmp_path / "run.png"))
    assert result.exit_code != 0
    assert "pip install 'pacore-graph[viz]'" in result.stderr
    assert not (tmp_path / "run.png").exists()


def test_view_of_a_file_that_is_not_a_trace_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"answer": 1}')
    result = cli("trace", "view", str(bad), "--out", str(tmp_path / "x.html"))
    assert result.exit_code == 2
    assert "is not a pacore trace" in result.stderr


@pytest.mark.parametrize("name", ["pacore-high", "self-consistency"])
def test_graphs_draw_mermaid_names_the_nodes(name, tmp_path):
    printed = cli("graphs", "draw", name)
    assert printed.exit_code == 0, printed.output
    nodes = {
        "pacore-high": ["prepare", "plan", "explorers", "compact", "synthesize"],
        "self-consistency": ["explorers", "vote"],
    }
    for node in nodes[name]:
        assert re.search(rf"^\s*{node}\(", printed.stdout, re.M), node
    assert "graph TD" in printed.stdout and "-.->" in printed.stdout  # conditional fan-out edges are dashed

    out = tmp_path / "graph.mmd"
    assert cli("graphs", "draw", name, "--out", str(out)).exit_code == 0
    assert out.read_text() == printed.stdout


@pytest.mark.parametrize(
    ("args", "explorers", "synthesis"),
    [
        (["pacore-high"], "K = 32 then 4", True),
        (["self-consistency"], "K = 16", False),
        (["sequential"], "K = 1 then 1 then 1 then 1", True),
    ],
)
def test_graphs_draw_shows_each_rounds_k(args, explorers, synthesis):
    printed = cli("graphs", "draw", *args).stdout
    assert re.search(rf"^\s*explorers\(explorers<hr/><small><em>{explorers}</em></small>\)$", printed, re.M)
    assert ("synthesize(synthesize<hr/><small><em>K = 1</em></small>)" in printed) is synthesis


def test_graphs_draw_png_is_rendered_locally(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "graph.png"
    result = cli("graphs", "draw", "pacore-high", "--out", str(out))  # pytest-socket: any web call would fail
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000


def test_graphs_draw_rejects_other_formats(tmp_path):
    result = cli("graphs", "draw", "pacore-low", "--out", str(tmp_path / "graph.svg"))
    assert result.exit_code == 2
    assert "use a .mmd (Mermaid) or .png" in result.stderr
