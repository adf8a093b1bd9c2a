"""Drive Debian's headless Chromium over the DevTools protocol (test helper, no network features)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import numpy as np
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
]


class Chromium:
    """One headless browser with one page; records console messages and uncaught errors."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 30.0):
        import websocket  # websocket-client (comes with kfp's kubernetes client)

        self.profile = tempfile.mkdtemp(prefix="lverb-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.05)
        port = int(open(port_file).read().split("\n")[0])
        ws_url = None
        while ws_url is None:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
            ws_url = next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
            if ws_url is None:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("chromium has no page target")
                time.sleep(0.05)
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        self.console: list[dict] = []     # {"level", "text"}
        self.errors: list[str] = []       # uncaught exceptions and error-level log entries
        self.requests: list[str] = []     # URLs the page asked the network for
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _record(self, msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console.append({"level": p.get("type"), "text": text})
            if p.get("type") in ("error", "assert"):
                self.errors.append(f"console.{p.get('type')}: {text}")
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("uncaught: " + (d.get("exception", {}).get("description") or d.get("text", "")))
        elif m == "Log.entryAdded":
            e = p.get("entry", {})
            self.console.append({"level": e.get("level"), "text": e.get("text")})
            if e.get("level") == "error":
                self.errors.append(f"log.{e.get('source')}: {e.get('text')}")
        elif m == "Page.javascriptDialogOpening":
            self.errors.append(f"dialog opened: {p.get('type')} {p.get('message')!r}")
            self.call("Page.handleJavaScriptDialog", accept=True)
        elif m == "Network.requestWillBeSent":
            self.requests.append(p.get("request", {}).get("url", ""))
        self.events.append(msg)

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._record(msg)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self._record(msg)
            if msg.get("method") == method:
                self.events.remove(msg)
                return msg
        raise TimeoutError(method)

    def open(self, path: str, timeout: float = 60.0) -> float:
        """Navigate to a local file; returns seconds until the load event."""
        t0 = time.monotonic()
        self.events.clear()
        self.console.clear()
        self.errors.clear()
        self.requests.clear()
        self.call("Page.navigate", url="file://" + os.path.abspath(path))
        self.wait_event("Page.loadEventFired", timeout)
        return time.monotonic() - t0

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def search(self, input_id: str, hook: str, text: str) -> int:
        """Type ``text`` into an image browser's search box and wait until the page has filtered (the
        browser's ``window[hook]`` records the query; the input handler debounces on big pages); the
        number of matching images."""
        self.eval(f"var s = document.getElementById({input_id!r}); s.value = {text!r}; "
                  "s.dispatchEvent(new Event('input')); 1")
        self.wait_for(f"window.{hook}.q === {text!r}")
        return self.eval(f"window.{hook}.matches")

    def wait_for(self, expression: str, timeout: float = 30.0, poll: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.eval(expression)
            if v:
                return v
            time.sleep(poll)
        raise TimeoutError(expression)

    def screenshot(self, path: str, full_page: bool = False) -> str:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", **params)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pixels_vary(path: str) -> float:
    """The standard deviation of a screenshot's grey levels: near 0 for a blank page."""
    with Image.open(path) as im:
        return float(np.asarray(im.convert("L"), dtype=float).std())


def external_requests(requests: list[str]) -> list[str]:
    """The requests that left the page's own file (the report must make none)."""
    return [u for u in requests if not u.startswith(("file://", "data:"))]
