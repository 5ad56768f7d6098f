"""Headless Chromium driven over the DevTools protocol, to measure a page as a reader sees it
(element sizes after the page's scripts ran), which a DOM dump cannot tell. The protocol's
websocket client is aiohttp's, which Ray's dashboard already installs; Chromium listens on
loopback only."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is needed for the browser tests: run `make "
                           "browser` (apt-get install chromium chromium-driver)")
    return path


class Browser:
    """``with Browser(profile) as b: b.open(url, ready_js); b.evaluate(js); b.screenshot(p)``"""

    def __init__(self, profile: Path, *, width: int = 1400, height: int = 2000) -> None:
        self.profile, self.size = profile, (width, height)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws_url = ""

    def __enter__(self) -> Browser:
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a reused profile's is a dead browser's
        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={self.profile}",
                                      f"--window-size={self.size[0]},{self.size[1]}",
                                      "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not port_file.is_file() or not port_file.read_text().strip():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            self.ws_url = pages[0]["webSocketDebuggerUrl"]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    async def _session(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        import aiohttp

        out = []
        async with aiohttp.ClientSession() as http, http.ws_connect(
                self.ws_url, max_msg_size=0) as ws:
            for i, (method, params) in enumerate(calls, 1):
                await ws.send_json({"id": i, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json(timeout=120)
                    if msg.get("id") == i:
                        break
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                out.append(msg.get("result"))
        return out

    def call(self, method: str, **params: Any) -> Any:
        return asyncio.run(self._session([(method, params)]))[0]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression on the page (JSON-able)."""
        got = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expression[:60]}...: {got['exceptionDetails']}")
        return got["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 90) -> None:
        """Load ``url`` and wait until the JavaScript expression ``ready`` is true."""
        self.call("Emulation.setDeviceMetricsOverride", width=self.size[0],
                  height=self.size[1], deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.open_wait(ready, timeout, url)

    def open_wait(self, ready: str, timeout: float = 90, url: str = "the page") -> None:
        """Wait until the JavaScript expression ``ready`` is true (after a click, say)."""
        deadline = time.monotonic() + timeout
        # While the page loads, the expression may read what is not there yet (no body).
        while not self.evaluate(f"(() => {{ try {{ return Boolean({ready}); }} "
                                f"catch (e) {{ return false; }} }})()"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{url}: not ready after {timeout:g} s ({ready})")
            time.sleep(0.5)
        time.sleep(1.0)  # plotly's resize handlers settle

    def screenshot(self, path: Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


# Each plotly figure on the page against what holds it: how many px of it, of its title or of
# its legend stick out past its parent box, past any ancestor that clips (overflow other than
# visible), past the window, or (title, legend) past the figure itself.
FIGURE_FIT = """
(() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => {
  const svg = el.querySelector('svg.main-svg') || el;
  const r = svg.getBoundingClientRect();
  const parts = [r];
  for (const sel of ['.gtitle', '.legend']) {
    const part = el.querySelector(sel);
    if (part) parts.push(part.getBoundingClientRect());
  }
  const right = Math.max(...parts.map(p => p.right));
  const bottom = Math.max(...parts.map(p => p.bottom));
  let over = Math.max(0, right - el.parentElement.getBoundingClientRect().right,
                      right - document.documentElement.clientWidth, right - r.right,
                      bottom - r.bottom);
  for (let a = el.parentElement; a; a = a.parentElement) {
    const style = getComputedStyle(a), box = a.getBoundingClientRect();
    if (style.overflowX !== 'visible') over = Math.max(over, right - box.right);
    if (style.overflowY !== 'visible' && a !== document.body && a !== document.documentElement)
      over = Math.max(over, bottom - box.bottom);
  }
  const title = el.querySelector('.gtitle');
  return {title: title ? title.textContent : '', width: r.width, over: over,
          box: el.parentElement.getBoundingClientRect().width};
}))()
"""
