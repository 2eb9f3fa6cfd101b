"""Garbage-collector settings for a process that runs many explorers at once (the CLI's commands call it).

CPython collects its youngest generation every 700 net allocations, and the whole heap whenever enough objects
have survived. A run of a thousand explorers allocates millions of short-lived objects (LangGraph's tasks and
configs, aiohttp's requests), and each full collection walks every object the imported libraries made as well,
some 300,000 of them. Measured on the simulator (``bench_pacore.py --only w --gc default`` against the default
``--gc pacore``), uniform 64 problems × [32,4]: the collector ran 1.36 s of the run's time, six full collections,
at CPython's settings; 0.58 s and none after :func:`tune_gc`. The frozen objects are never collected (an imported
module's objects seldom become garbage); cycles made afterwards still are, a little later.
"""

from __future__ import annotations

import gc

#: The youngest generation's threshold after :func:`tune_gc` (CPython's default: 700).
YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Exempt the objects alive now (the imported modules') from collections, and collect the young less often.

    Call it once, after the imports and before the run (``pacore`` does, for every command that runs graphs or
    serves); calling it again freezes what has been made since. It changes the whole process's collector
    (``gc.freeze``, ``gc.set_threshold``): an application embedding pacore-graph decides whether to call it.
    """
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
