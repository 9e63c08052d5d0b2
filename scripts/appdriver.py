"""Run app.py in a real `streamlit run` server and drive it with headless Chromium (Playwright).

Used by the browser test (tests/test_app_browser.py) and by scripts/screenshot_app.py. Chromium is
Debian's `chromium` package (no Playwright browser download).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and anything it started (its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def serve_app(env: dict[str, str] | None = None, startup_timeout: float = 90) -> Iterator[AppServer]:
    """`streamlit run app.py` on a free 127.0.0.1 port; waits for /_stcore/health, always stops it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address=127.0.0.1",
               f"--server.port={port}", "--server.headless=true", "--browser.gatherUsageStats=false",
               "--server.fileWatcherType=none"]
    with tempfile.TemporaryDirectory(prefix="captioner-app-") as folder:
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        server = AppServer(url, process, log_path)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not come up on {url}:\n{server.log()[-3000:]}")
                time.sleep(0.25)
            yield server
        finally:
            _stop(process)


def launch_chromium(playwright):
    """Headless Debian Chromium through Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found; install Debian's chromium package (apt-get install chromium).")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def upload(page, files: list[Path]) -> None:
    """Drop files into the app's uploader, like a user choosing them in the file dialog."""
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(f) for f in files])
