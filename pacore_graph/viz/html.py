"""A trace as one self-contained HTML page: inline CSS, inline JS, inline SVG, and no network fetch at all.

Rounds are columns of trajectory cards (tokens, seconds, finish_reason, extracted answer), coloured by the
answer they agree on; under each round, what the next round was shown; then a timeline of request latency
and the totals. A synthesis card (the final round, and any round after the first) says which of the references it
was shown its text cites ("Reference 3", "response 2", ...: :func:`pacore_graph.prompts.cited_references`), and
those references are marked "cited" in the list under the round they came from. The page works without
JavaScript; the script only highlights cards that share an answer.

The problem's images are shown as the trace's thumbnails (inline data URLs, so still no fetch); a part without
one (no Pillow when the trace was recorded, an http(s) URL, audio) is a placeholder naming its reference.
"""

from __future__ import annotations

import html
from collections import Counter

from pacore_graph.messages import text_of
from pacore_graph.prompts import cited_references
from pacore_graph.trace import Trace, TraceMedia, TraceRound, TraceTrajectory

__all__ = ["render_trace_html"]

# Colour-blind friendly (Okabe-Ito); answers get them in order of how many trajectories gave them.
_PALETTE = ["#009E73", "#0072B2", "#E69F00", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"]
_NO_ANSWER = "#bbbbbb"
# The timeline colours rounds, not answers: greys, so no bar reads as an answer's colour.
_ROUND_SHADES = ["#333333", "#666666", "#8c8c8c", "#4d4d4d", "#7a7a7a"]
_FINAL_SHADE = "#000000"
_CITED = ' class="cited"'

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .5rem} h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
.meta{color:#555;font-size:.9rem} .answer{font-size:1.1rem;background:#fff;border:1px solid #ddd;padding:.5rem .75rem;
border-radius:6px;white-space:pre-wrap;max-height:12rem;overflow:auto}
.rounds{display:flex;gap:1rem;align-items:flex-start;overflow-x:auto;padding-bottom:.5rem}
.round{flex:0 0 15rem;background:#fff;border:1px solid #ddd;border-radius:8px;padding:.5rem}
.round h3{font-size:.95rem;margin:.1rem 0 .4rem} .round .sub{font-size:.8rem;color:#666;margin-bottom:.4rem}
.card{border-left:6px solid var(--c);background:color-mix(in srgb,var(--c) 12%,white);border-radius:5px;
padding:.35rem .5rem;margin:.35rem 0;font-size:.8rem;transition:outline .1s}
.card.hl{outline:2px solid #222} .card .ans{font-weight:600;word-break:break-word}
.card .nums{color:#444} .card.length{border-style:dashed}
details{font-size:.8rem} details pre{white-space:pre-wrap;word-break:break-word;max-height:16rem;overflow:auto;
background:#f4f4f4;padding:.4rem;border-radius:4px}
.shown{margin-top:.5rem;border-top:1px dashed #ccc;padding-top:.4rem;font-size:.8rem;color:#444}
table{border-collapse:collapse;font-size:.85rem;background:#fff} td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right} th{background:#f0f0f0}
.cites{margin-top:.2rem;font-size:.75rem;color:#333} .cites b{background:#222;color:#fff;border-radius:3px;
padding:0 .3rem;margin-right:.15rem} .cited summary{font-weight:600}
.cited summary::after{content:" · cited";color:#D55E00}
.legend span{display:inline-block;margin-right:.8rem;font-size:.8rem}
.media{display:flex;gap:.5rem;flex-wrap:wrap;margin:.5rem 0} .media figure{margin:0;font-size:.75rem;color:#555;
max-width:10rem;word-break:break-all} .media img{display:block;max-width:128px;max-height:128px;border:1px solid #ddd}
.media .ph{width:128px;height:80px;display:flex;align-items:center;justify-content:center;background:#eee;
border:1px dashed #aaa;color:#666}
.legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.25rem;vertical-align:middle}
.legend i.dashed{width:.5rem;background:#fff;border-left:4px dashed #666}
"""

# Hovering a card outlines every card with the same answer, across rounds.
_JS = """
document.querySelectorAll('.card[data-answer]').forEach(function (card) {
  var key = card.getAttribute('data-answer');
  var same = document.querySelectorAll('.card[data-answer="' + CSS.escape(key) + '"]');
  card.addEventListener('mouseenter', function () { same.forEach(function (c) { c.classList.add('hl'); }); });
  card.addEventListener('mouseleave', function () { same.forEach(function (c) { c.classList.remove('hl'); }); });
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _colours(trace: Trace) -> dict[str, str]:
    """One colour per answer, most frequent first, over the whole run."""
    counts = Counter(t.answer for t in trace.trajectories if t.answer is not None)
    return {answer: _PALETTE[i % len(_PALETTE)] for i, (answer, _) in enumerate(counts.most_common())}


def _cited(t: TraceTrajectory, shown: int) -> list[int]:
    """The references (1 to ``shown``) the trajectory's text cites."""
    return cited_references("\n".join(part for part in (t.reasoning, t.content) if part), shown)


def _cites_line(cited: list[int], shown: int) -> str:
    if not shown:
        return ""
    if not cited:
        return f'<div class="cites">cites none of its {shown} reference(s)</div>'
    badges = "".join(f"<b>{n}</b>" for n in cited)
    return f'<div class="cites">cites reference(s) {badges} of {shown}</div>'


def _card(t: TraceTrajectory, colours: dict[str, str], shown: int = 0) -> str:
    colour = colours.get(t.answer, _NO_ANSWER) if t.answer is not None else _NO_ANSWER
    answer = _e(t.answer) if t.answer is not None else "<em>no answer</em>"
    data = f' data-answer="{_e(t.answer)}"' if t.answer is not None else ""
    reasoning = f"<details><summary>reasoning</summary><pre>{_e(t.reasoning)}</pre></details>" if t.reasoning else ""
    rate = t.completion_tokens / t.seconds if t.seconds > 0 else 0.0
    return (
        f'<div class="card {_e(t.finish_reason)}" style="--c:{colour}"{data}>'
        f'<div><b>#{t.index}</b> <span class="ans">{answer}</span></div>'
        f'<div class="nums">{t.completion_tokens:,} tok · {t.seconds:.2f} s · {rate:,.0f} tok/s · '
        f"{_e(t.finish_reason)}</div>{_cites_line(_cited(t, shown), shown)}"
        f"<details><summary>content</summary><pre>{_e(t.content)}</pre></details>{reasoning}</div>"
    )


def _round_column(
    row: TraceRound, colours: dict[str, str], rounds_total: int, seen: int = 0, cited_next: frozenset[int] = frozenset()
) -> str:
    """One round's column; ``seen``: references its trajectories were shown; ``cited_next``: which of this
    round's references the next round's syntheses cite."""
    title = "Final synthesis" if row.final else f"Round {row.round} of {rounds_total}"
    tokens = sum(t.completion_tokens for t in row.trajectories)
    cards = "".join(_card(t, colours, seen) for t in row.trajectories)
    shown = ""
    if row.messages_after_compaction is not None:
        dropped = (row.dropped_empty or 0) + (row.dropped_truncated or 0)
        refs = "".join(
            f"<details{_CITED if i in cited_next else ''}><summary>reference {i}</summary><pre>{_e(m)}</pre></details>"
            for i, m in enumerate(row.messages_after_compaction, 1)
        )
        shown = (
            f'<div class="shown"><b>shown to the next round:</b> {row.kept} reference(s), {dropped} dropped '
            f"({row.dropped_empty or 0} empty, {row.dropped_truncated or 0} truncated); next prompt "
            f"{row.next_prompt_chars or 0:,} chars{refs}</div>"
        )
    return (
        f'<section class="round"><h3>{title}</h3><div class="sub">K={row.k} · {len(row.trajectories)} returned · '
        f"{tokens:,} completion tok · prompt {row.prompt_chars:,} chars</div>{cards}{shown}</section>"
    )


def _round_shade(round_: int, final: bool) -> str:
    return _FINAL_SHADE if final else _ROUND_SHADES[(round_ - 1) % len(_ROUND_SHADES)]


def _timeline_legend(trace: Trace) -> str:
    rounds = sorted({(t.final, t.round) for t in trace.trajectories})
    return (
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{_round_shade(r, final)}"></i>{"final synthesis" if final else f"round {r}"}'
            "</span>"
            for final, r in rounds
        )
        + "</div>"
    )


def _timeline(trace: Trace) -> str:
    """An inline SVG: one bar per request, from its start to its end, shaded by round (a legend names them)."""
    trajectories = trace.trajectories
    if not trajectories:
        return "<p>no requests</p>"
    t0 = min(t.started_at for t in trajectories)
    span = max(t.started_at + t.seconds for t in trajectories) - t0 or 1.0
    bar, left, width = 8, 90, 800
    height = bar * len(trajectories) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" height="{height}" role="img">']
    for i, t in enumerate(trajectories):
        x = left + (t.started_at - t0) / span * width
        w = max(1.0, t.seconds / span * width)
        y = i * bar
        colour = _round_shade(t.round, t.final)
        label = "final" if t.final else f"r{t.round} #{t.index}"
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar - 1}" fill="{colour}">'
            f"<title>{_e(label)}: {t.seconds:.2f} s, {t.completion_tokens} tok</title></rect>"
        )
        if i == 0 or t.round != trajectories[i - 1].round:
            parts.append(f'<text x="0" y="{y + bar}" font-size="10">{_e(label.split(" ")[0])}</text>')
    parts.append(
        f'<line x1="{left}" x2="{left + width}" y1="{height - 22}" y2="{height - 22}" stroke="#999"/>'
        f'<text x="{left}" y="{height - 8}" font-size="10">0 s</text>'
        f'<text x="{left + width - 40}" y="{height - 8}" font-size="10">{span:.2f} s</text></svg>'
    )
    return "".join(parts)


def _totals(trace: Trace) -> str:
    rows = []
    for row in trace.rounds:
        name = "final" if row.final else str(row.round)
        prompt = sum(t.prompt_tokens for t in row.trajectories)
        completion = sum(t.completion_tokens for t in row.trajectories)
        seconds = max((t.seconds for t in row.trajectories), default=0.0)
        rows.append(
            f"<tr><td>{name}</td><td>{row.k}</td><td>{len(row.trajectories)}</td><td>{prompt:,}</td>"
            f"<td>{completion:,}</td><td>{seconds:.2f}</td></tr>"
        )
    trajectories = trace.trajectories
    wall = (trace.finished_at - trace.started_at) if trace.finished_at else 0.0
    rows.append(
        f"<tr><th>total</th><th></th><th>{len(trajectories)}</th>"
        f"<th>{sum(t.prompt_tokens for t in trajectories):,}</th>"
        f"<th>{sum(t.completion_tokens for t in trajectories):,}</th><th>{wall:.2f} (wall)</th></tr>"
    )
    head = "<tr><th>round</th><th>K</th><th>returned</th><th>prompt tok</th><th>completion tok</th><th>slowest s</th>"
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def _media(items: list[TraceMedia]) -> str:
    """The problem's images: each thumbnail, or a placeholder, captioned with its reference."""
    if not items:
        return ""
    figures = []
    for item in items:
        caption = " · ".join(
            part
            for part in (
                item.mime or item.type,
                f"{item.bytes:,} bytes" if item.bytes is not None else "",
                f"sha256 {item.sha256[:12]}…" if item.sha256 else "",
                item.url or "",
            )
            if part
        )
        if item.thumbnail is not None and item.thumbnail.startswith("data:image/"):
            picture = f'<img src="{_e(item.thumbnail)}" alt="{_e(caption)}">'
        else:
            picture = f'<div class="ph">{_e(item.type)}</div>'
        figures.append(f"<figure>{picture}<figcaption>{_e(caption)}</figcaption></figure>")
    return f'<div class="media">{"".join(figures)}</div>'


def _problem_text(problem: str | list[dict[str, object]] | None) -> str:
    if isinstance(problem, str):
        return problem
    return "\n\n".join(f"{m.get('role')}: {text_of(m.get('content'))}" for m in problem or [])


def render_trace_html(trace: Trace) -> str:
    """The trace as a single HTML page (a string), with everything inline."""
    colours = _colours(trace)
    parallel = sum(1 for r in trace.rounds if not r.final)
    # What each round was shown: the references the round before it handed on.
    seen = [0, *(len(r.messages_after_compaction or []) for r in trace.rounds[:-1])][: len(trace.rounds)]
    cited = [
        frozenset(n for t in row.trajectories for n in _cited(t, shown))
        for row, shown in zip(trace.rounds, seen, strict=True)
    ]
    columns = "".join(
        _round_column(row, colours, parallel, seen[i], cited[i + 1] if i + 1 < len(cited) else frozenset())
        for i, row in enumerate(trace.rounds)
    )
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(a)}</span>' for a, c in colours.items())
    legend += f'<span><i style="background:{_NO_ANSWER}"></i>no answer</span>'
    legend += '<span><i class="dashed"></i>dashed border: cut off by max_tokens (finish_reason length)</span>'
    problem = _problem_text(trace.problem)
    answer = trace.answer if trace.answer is not None else "(the run did not finish)"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>pacore trace: {_e(trace.graph.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(trace.graph.name)}</h1>"
        f'<div class="meta">schedule {_e([r.k for r in trace.rounds if not r.final])} · '
        f"{len(trace.trajectories)} trajectories · finish_reason {_e(trace.finish_reason)}</div>"
        f'<h2>Problem</h2><div class="answer">{_e(problem)}</div>{_media(trace.media)}'
        f'<h2>Answer</h2><div class="answer" id="answer">{_e(answer)}</div>'
        f'<h2>Rounds</h2><div class="legend">{legend}</div><div class="rounds">{columns}</div>'
        f"<h2>Request timeline</h2>{_timeline_legend(trace)}{_timeline(trace)}"
        f"<h2>Totals</h2>{_totals(trace)}"
        f"<script>{_JS}</script></body></html>"
    )
