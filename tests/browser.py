"""Headless Chromium for tests of the HTML pages, driven over the DevTools protocol (aiohttp's
websocket client, which Ray already brings): open a page, run JavaScript in it, click, take
screenshots, and collect console errors and uncaught exceptions. The browser is started and
stopped by PID. Without a ``chromium`` binary the tests skip, naming Debian's package, except
under ``CI=true``, where a missing browser fails them: CI must not turn green by skipping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from local.processes import descendants, stop_pids

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    message = "no headless Chromium: install Debian's 'chromium' package (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " -- under CI=true the page tests fail instead of skipping")
    pytest.skip(message)


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, profile: Path, *, width: int = 1400, height: int = 1000) -> None:
        self.profile = profile
        self.size = (width, height)
        self.loop = asyncio.new_event_loop()
        self.process: subprocess.Popen | None = None
        self.errors: list[str] = []  # console errors, uncaught exceptions, failed loads
        self._socket: Any = None
        self._session: Any = None
        self._next_id = 0
        self._events: list[dict] = []

    def __enter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {self.process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.loop.run_until_complete(self._connect(port))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._socket is not None:
                self.loop.run_until_complete(self._socket.close())
            if self._session is not None:
                self.loop.run_until_complete(self._session.close())
        finally:
            self.loop.close()
            if self.process is not None:
                stop_pids({self.process.pid} | descendants(self.process.pid), grace_seconds=5)
                self.process.wait(timeout=10)

    async def _connect(self, port: int) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        while True:
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = [t for t in await response.json() if t.get("type") == "page"]
            if targets or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        self._socket = await self._session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0)
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            await self._call(method)

    async def _call(self, method: str, **params: Any) -> dict:
        self._next_id += 1
        ident = self._next_id
        await self._socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self._socket.receive()).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        self._events.append(message)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + params["exceptionDetails"].get("text", "")
                               + " " + str(params["exceptionDetails"].get("exception", {}).get("description", "")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append("log: " + params["entry"].get("text", ""))

    async def _wait_for(self, method: str, timeout: float) -> None:
        if any(event.get("method") == method for event in self._events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = json.loads((await self._socket.receive(timeout=max(0.1, deadline - time.monotonic()))).data)
            except asyncio.TimeoutError:
                break
            self._event(message)
            if message.get("method") == method:
                return
        raise TimeoutError(f"no {method} within {timeout} s")

    def open(self, path: Path, timeout: float = 60) -> None:
        """Load a local file and wait for its load event."""
        self._events.clear()
        self.loop.run_until_complete(self._call("Page.navigate", url=path.resolve().as_uri()))
        self.loop.run_until_complete(self._wait_for("Page.loadEventFired", timeout))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.loop.run_until_complete(
            self._call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True))
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the window)."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.loop.run_until_complete(self._call(
            "Emulation.setDeviceMetricsOverride", width=self.size[0], height=min(max(height, 200), 16000),
            deviceScaleFactor=1, mobile=False))
        data = self.loop.run_until_complete(self._call("Page.captureScreenshot", format="png"))["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def broken_images(self) -> list[str]:
        """The images of the page that did not render (not loaded, or natural width 0)."""
        return self.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                             ".map(i => i.alt || i.src.slice(0, 60))")
