"""A headless Chromium driven through the DevTools protocol, for tests of the web viewer.

Only loopback addresses; every wait is bounded. ``chromium_path()`` is None where no Chromium
is installed (the tests then skip, saying so).
"""

from __future__ import annotations

import base64
import io
import json
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium_path() -> str | None:
    for name in ("/usr/bin/chromium", *CANDIDATES):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless page: ``open(url)``, ``evaluate(js)``, ``screenshot()``; a context manager."""

    def __init__(self, width: int = 800, height: int = 600, timeout: float = 60.0):
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory(prefix="birdnerf-chromium-")
        self.process = subprocess.Popen(
            [
                chromium_path() or "chromium",
                "--headless=new",
                "--no-sandbox",
                "--use-angle=swiftshader",
                "--use-gl=angle",
                "--enable-unsafe-swiftshader",
                "--disable-gpu-sandbox",
                "--no-first-run",
                "--disable-extensions",
                f"--window-size={width},{height}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            port = self._devtools_port(timeout)
            deadline = time.monotonic() + timeout
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                    pages = [t for t in json.load(response) if t.get("type") == "page"]
                if pages or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
            self._next_id = 0
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in self.process.stderr:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if "DevTools listening on ws://" in line:
                return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        raise RuntimeError("chromium did not start its DevTools endpoint:\n" + "".join(seen[-20:]))

    def call(self, method: str, timeout: float = 60.0, **params) -> dict:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path | None = None) -> np.ndarray:
        """(H, W, 3) uint8 of the page as it is drawn now (also saved as a PNG at ``path``)."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
