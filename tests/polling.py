"""Waiting in tests for state that has no event to wait on: poll it, and fail clearly if it never comes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], bool | Awaitable[bool]], seconds: float = 2.0) -> None:
    """Poll ``condition`` (plain or async) every 10 ms until it holds; fail the test if ``seconds`` pass first."""
    for _ in range(int(seconds / 0.01)):
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {seconds} s waiting for {condition.__name__}")
