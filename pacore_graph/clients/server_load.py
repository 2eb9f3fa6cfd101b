"""Adaptive concurrency: read a vLLM server's load from ``/metrics`` and size the client's window to it.

A fixed cap is wrong both ways: below the server's batch capacity it idles the server, and far above it the
excess waits in the server's first-come queue, where the client can no longer choose what goes next (see
:mod:`pacore_graph.clients.limiter`). vLLM exports its scheduler state in Prometheus text at ``/metrics``:
``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and ``vllm:kv_cache_usage_perc`` (older
versions: ``vllm:gpu_cache_usage_perc``). :class:`AdaptiveWindow` turns successive readings into a window:

* the server queues (waiting > 0 in two readings in a row; one may be a request between two steps): shrink the
  window to this client's share of what runs (at most by half per reading), so the excess waits here instead,
  in priority order. When everything the server holds is this client's, what it runs then is its batch size,
  and the window never shrinks below the largest such size seen (a reading taken while finished sequences'
  slots wait for the next step shows fewer running, not a smaller server), plus ``headroom`` of it;
* the KV cache is nearly full: hold;
* otherwise, if requests wait for room in the client (or in front of it, at a balancer): grow, doubling until
  the server first queues (with ``jump_start``, straight to the demand if that is more), then by an eighth per
  reading.

vLLM does not export its batch size (``max_num_seqs``) on ``/metrics`` (0.32 shows the KV cache's size in
``vllm:cache_config_info``, not the sequence cap), so the window finds it: ``VLLMClient`` jumps to its demand at
the first readings, taken quickly while the window is still growing, and the server's queue then shows how many
it runs at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["AdaptiveWindow", "ServerLoad", "parse_server_load"]

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_GAUGE_PREFIXES = tuple(f"{name}{{" for name in (_RUNNING, _WAITING, *_KV_USAGE)) + tuple(
    f"{name} " for name in (_RUNNING, _WAITING, *_KV_USAGE)
)


@dataclass(frozen=True)
class ServerLoad:
    """One reading of a vLLM server's scheduler: sequences running and waiting, and KV-cache use (0-1)."""

    running: int
    waiting: int
    kv_usage: float | None = None


def parse_server_load(text: str) -> ServerLoad | None:
    """The load in a ``/metrics`` page (summed over engines), or None when the page has no vLLM scheduler metrics."""
    # A vLLM page is ~50 KB of histograms; parse only the lines of the three gauges (~20× faster).
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(_GAUGE_PREFIXES))
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                if math.isfinite(sample.value):  # a NaN or Inf gauge is no reading
                    values.setdefault(sample.name, []).append(sample.value)
    except ValueError:
        return None  # not Prometheus text
    if _RUNNING not in values or _WAITING not in values:
        return None
    kv = next((max(values[name]) for name in _KV_USAGE if name in values), None)
    return ServerLoad(running=int(sum(values[_RUNNING])), waiting=int(sum(values[_WAITING])), kv_usage=kv)


class AdaptiveWindow:
    """The client's window (sequences in flight), updated from each :class:`ServerLoad` reading.

    Args:
        start: the first window, used until readings arrive.
        floor, ceiling: the window stays within these.
        kv_high: KV-cache use at or above which the window stops growing.
        jump_start: before the server first queues, grow straight to the client's demand (sequences in flight
            and waiting) when that is more than double: a server with room runs all of it at once (for a
            window no balancer routes by; see :meth:`update`).
        headroom: alone on a server, the window keeps the batch size it saw plus this fraction of it (queued
            there): a slot freed by a finished sequence is then refilled at the next step, not only once the
            client has read the answer and sent another (which a client busy with many answers does late).
    """

    def __init__(
        self,
        start: int,
        *,
        floor: int = 1,
        ceiling: int = 1024,
        kv_high: float = 0.95,
        jump_start: bool = False,
        headroom: float = 0.0,
    ) -> None:
        self.headroom = headroom
        self.floor = max(1, floor)
        self.ceiling = max(self.floor, ceiling)
        self.kv_high = kv_high
        self.jump_start = jump_start
        self.limit = min(max(start, self.floor), self.ceiling)
        self.slow_start = True  # double until the server first queues
        self.readings = 0
        #: the most sequences the server was seen to run while it queued only this client's: its batch size
        self.capacity = 0
        self._queued_before = False

    def update(self, load: ServerLoad, in_flight: int, queued: int, *, alone: bool = True) -> int:
        """The new window, given a reading and the client's sequences in flight and waiting for room.

        ``alone``: no balancer routes by this window's room. Only then does ``jump_start`` apply (a window that
        grows past its peers at once would draw every request of a balancer to itself, while the others stay
        small), and then also: if this first reading finds the server idle (nothing running or waiting: no one
        else uses it), the window opens to the ceiling, as a client without a window would send; the server's
        queue then shows its batch size and the window shrinks to it.
        """
        jump = self.jump_start and alone
        first, self.readings = self.readings == 0, self.readings + 1
        if first and jump and load.running == 0 and load.waiting == 0:
            self.limit = self.ceiling
            return self.limit
        queueing = load.waiting > 0 and self._queued_before
        self._queued_before = load.waiting > 0
        if queueing:
            self.slow_start = False
            # This client's share of what runs, if the server's requests are partly someone else's; never more
            # than half the window at once, so a co-tenant's burst cannot squeeze it to the floor in one reading.
            ours = in_flight * load.running // max(1, load.running + load.waiting)
            before = self.limit
            self.limit = max(self.floor, self.limit // 2, min(self.limit, ours))
            if in_flight >= load.running + load.waiting:  # all the server holds is ours (or on its way to it)
                self.capacity = max(self.capacity, load.running)
                self.limit = max(self.limit, min(before, self.capacity + int(self.capacity * self.headroom)))
        elif load.kv_usage is not None and load.kv_usage >= self.kv_high:
            pass
        elif queued > 0 and load.waiting == 0:
            step = self.limit if self.slow_start else max(1, self.limit // 8)
            if self.slow_start and jump:
                step = max(step, in_flight + queued - self.limit)
            self.limit = min(self.ceiling, self.limit + step)
        return self.limit
