"""Headless Chromium for the report tests, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe``: commands on fd 3, events on fd 4, NUL-separated
JSON.  Chromium reports console calls (``Runtime.consoleAPICalled``), uncaught
exceptions (``Runtime.exceptionThrown``) and browser log entries
(``Log.entryAdded``: Content-Security-Policy violations, failed loads) as
structured events, unlike ``--enable-logging=stderr`` whose stderr is also full
of unrelated D-Bus noise.  Used by ``test_report.py`` (synthetic report) and
``test_workflow.py`` (the report of a real workflow run).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
NO_CHROMIUM = "needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"


class DevTools:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (fd 3: commands in, fd 4: events out)."""

    def __init__(self, user_data_dir: Path, width: int = 1280, height: int = 4000):
        cmd_r, self._cmd_w = os.pipe()
        self._ev_r, ev_w = os.pipe()

        def child() -> None:
            a, b = os.dup(cmd_r), os.dup(ev_w)  # above 4, so neither dup2 below clobbers the other
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={user_data_dir}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4), preexec_fn=child, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(cmd_r)
        os.close(ev_w)
        self.size = (width, height)
        self.events: list[dict] = []
        self._buf = b""
        self._id = 0
        self.session = None

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if not select.select([self._ev_r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._ev_r, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, url: str, timeout: float = 30.0) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        width, height = self.size
        self.call(
            "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        )
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._recv(deadline))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def problems(self) -> list[str]:
        """Console errors/warnings, uncaught exceptions and browser log entries (CSP, loading) seen so far."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{params['type']}: " + " ".join(str(a.get("value", "")) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                out.append(f"log {params['entry'].get('source')}: {params['entry'].get('text')}")
        return out

    def close(self) -> None:
        with contextlib.suppress(EOFError, TimeoutError, RuntimeError, OSError):
            self.call("Browser.close", session=False, timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._ev_r)


PAGE_CHECK = """JSON.stringify({
  images: document.images.length,
  broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,
  fetched: performance.getEntriesByType('resource').map(e => e.name),
  sections: document.querySelectorAll('main > section').length,
  height: document.documentElement.scrollHeight})"""


def browse(path: Path, tmp: Path) -> tuple[list[str], dict, bytes]:
    """Open ``path``; return (problems seen, :data:`PAGE_CHECK` results, a PNG screenshot)."""
    browser = DevTools(tmp / "chromium-profile")
    try:
        browser.open(path.resolve().as_uri())
        page = json.loads(browser.evaluate(PAGE_CHECK))
        png = browser.screenshot()
        return browser.problems(), page, png
    finally:
        browser.close()
        shutil.rmtree(tmp / "chromium-profile", ignore_errors=True)
