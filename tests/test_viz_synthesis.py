"""The trace page shows synthesis: which references a synthesis card's text cites, marked on both sides."""

import re

from pacore_graph import SamplingParams, build_pacore_graph, record_run
from pacore_graph.testing import FunctionBackend
from pacore_graph.viz import render_trace_html


def reply(messages, params):
    if "Reference Responses:" in messages[-1]["content"]:
        return "Reference 2 and response 3 agree, so \\boxed{1}."
    return f"It is \\boxed{{{params.seed % 3}}}."


async def page_of(schedule):
    graph = build_pacore_graph(FunctionBackend(reply), schedule, params=SamplingParams(seed=0))
    trace = await record_run(graph, {"problem": "What is x?"}, graph_name="pacore-demo")
    return render_trace_html(trace)


async def test_the_synthesis_card_marks_the_references_it_cites():
    page = await page_of("3")
    final = page.split("<h3>Final synthesis</h3>", 1)[1]
    assert '<div class="cites">cites reference(s) <b>2</b><b>3</b> of 3</div>' in final
    # Under round 1, the references the synthesis cites are marked; the other is not.
    shown = page.split("shown to the next round", 1)[1].split("</section>", 1)[0]
    assert re.findall(r'<details( class="cited")?><summary>reference (\d)</summary>', shown) == [
        ("", "1"), (' class="cited"', "2"), (' class="cited"', "3"),
    ]  # fmt: skip
    # Explorers of round 1 saw no reference: no citation line on their cards.
    assert page.split("<h3>Round 1 of 1</h3>", 1)[1].split("</section>", 1)[0].count('class="cites"') == 0


async def test_a_synthesis_that_cites_nothing_says_so():
    graph = build_pacore_graph(FunctionBackend(lambda m, p: "\\boxed{4}"), "2", params=SamplingParams(seed=0))
    page = render_trace_html(await record_run(graph, {"problem": "q"}, graph_name="g"))
    assert '<div class="cites">cites none of its 2 reference(s)</div>' in page
    assert 'class="cited"' not in page
