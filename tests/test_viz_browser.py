"""The HTML trace view in a real headless Chromium, driven over the DevTools protocol (CDP).

It checks what a user would see: one card per trajectory, no console error, no network request at all
(the page must be self-contained), and it saves a screenshot under the test's tmp dir. Without Chromium
the test is skipped, except with CI=true, where it fails (.ci/run installs the Debian package).
"""

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from pacore_graph.cli.main import app
from pacore_graph.testing import FakeOpenAIServer, FakeReply

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
]


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; CI must install it (apt-get install chromium, see .ci/run)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); CI runs this test")
    return CHROMIUM


def script(request):
    i = request.index
    answer = 391 if i % 3 else 381
    return FakeReply(content=f"<think>work {i}</think>The product is \\boxed{{{answer}}}.", reasoning=f"think {i}")


class CDP:
    """A minimal DevTools protocol client: send a command and wait for its reply; collect every event."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.events = []
        self.pending = {}
        self.seen = {}  # method -> asyncio.Event, set when such an event arrives
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)
                self.seen.setdefault(data.get("method"), asyncio.Event()).set()

    async def send(self, method, **params):
        ident = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 20)
        assert "error" not in reply, reply
        return reply.get("result", {})

    async def wait_for(self, method):
        await self.seen.setdefault(method, asyncio.Event()).wait()


def wait_for_port(profile: Path, seconds: float = 30) -> int:
    """Chromium writes its DevTools port to DevToolsActivePort in the profile once it listens."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().split()[0])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


async def inspect_page(port: int, page: Path):
    """Load ``page``; return (cards, console/JS errors, URLs requested other than the page, screenshot PNG)."""
    async with asyncio.timeout(60):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(url, max_msg_size=0) as ws:
                cdp = CDP(ws)
                for domain in ("Runtime", "Log", "Network", "Page"):
                    await cdp.send(f"{domain}.enable")
                await cdp.send("Page.navigate", url=page.as_uri())
                await asyncio.wait_for(cdp.wait_for("Page.loadEventFired"), 20)
                await asyncio.sleep(0.3)  # let late console messages arrive
                cards = await cdp.send(
                    "Runtime.evaluate", expression="document.querySelectorAll('.card').length", returnByValue=True
                )
                # Hovering must not throw either: the inline script runs on mouseenter.
                await cdp.send(
                    "Runtime.evaluate",
                    expression="document.querySelector('.card').dispatchEvent(new MouseEvent('mouseenter'))",
                )
                shot = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                await asyncio.sleep(0.1)
                cdp.reader.cancel()
        errors = [
            e
            for e in cdp.events
            if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]
        requested = [
            e["params"]["request"]["url"]
            for e in cdp.events
            if e.get("method") == "Network.requestWillBeSent" and e["params"]["request"]["url"] != page.as_uri()
        ]
    return cards["result"]["value"], errors, requested, base64.b64decode(shot["data"])


def open_in_chromium(binary, page: Path, profile: Path):
    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return asyncio.run(inspect_page(wait_for_port(profile), page))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_trace_page_renders_one_card_per_trajectory_in_chromium(chromium, tmp_path):
    trace_file, page = tmp_path / "run.json", tmp_path / "run.html"
    with FakeOpenAIServer(script).in_thread() as server:
        result = CliRunner().invoke(
            app,
            ["run", "What is 17*23?", "-s", "4,2", "--base-url", server.base_url, "--trace", str(trace_file), "-q"],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["trace", "view", str(trace_file), "--out", str(page)], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    profile = tmp_path / "profile"
    profile.mkdir()
    screenshot = tmp_path / "run-view.png"
    cards, errors, requested, png = open_in_chromium(chromium, page, profile)
    screenshot.write_bytes(png)

    assert cards == 4 + 2 + 1
    assert errors == []
    assert requested == []  # self-contained: not a single fetch
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000


def test_the_browser_check_catches_script_errors_and_fetches(chromium, tmp_path):
    """The checks above can fail: a page with a script error and a fetch is caught on both counts."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><div class="card"></div>'
        '<img src="http://127.0.0.1:9/missing.png"><script>notDefined();</script></body></html>'
    )
    profile = tmp_path / "profile"
    profile.mkdir()
    cards, errors, requested, _ = open_in_chromium(chromium, page, profile)
    assert cards == 1
    assert any(e.get("method") == "Runtime.exceptionThrown" for e in errors)
    assert requested == ["http://127.0.0.1:9/missing.png"]
