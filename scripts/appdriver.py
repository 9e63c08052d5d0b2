"""Run app.py in a real `streamlit run` server and drive it with headless Chromium (Playwright).

Used by the browser test (tests/test_app_browser.py), scripts/screenshot_app.py, and, for many
concurrent sessions, the load test (benchmarks/load_test.py, tests/test_app_load.py). Chromium is
Debian's `chromium` package (no Playwright browser download).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    with _serve([], env, startup_timeout) as server:
        yield server


@contextmanager
def serve_app_for(lifetime_s: float, env: dict[str, str] | None = None,
                  startup_timeout: float = 90) -> Iterator[AppServer]:
    """serve_app, and the server stops by itself after `lifetime_s` seconds even if this process dies
    first (it runs under coreutils `timeout`, which is then the process `server.process` names)."""
    prefix = ["timeout", "--kill-after=15", f"{max(1, int(lifetime_s))}s"]
    with _serve(prefix, env, startup_timeout) as server:
        yield server


@contextmanager
def _serve(prefix: list[str], env: dict[str, str] | None, startup_timeout: float) -> Iterator[AppServer]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*prefix, sys.executable, "-m", "streamlit", "run", str(APP), "--server.address=127.0.0.1",
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


# ------------------------------------------------------------------ many sessions at once (load test)
def single_language_env(model: str | Path, tokenizer: str | Path, encoder_weights: str | Path,
                        absent: Path) -> dict[str, str]:
    """serve_app's env for one English model: Chinese and German point at files under `absent` that do
    not exist, so the page offers English only, whatever models/ holds."""
    return {"CAPTIONER_MODEL": str(model), "CAPTIONER_TOKENIZER": str(tokenizer),
            "CAPTIONER_ENCODER_WEIGHTS": str(encoder_weights),
            **{f"CAPTIONER_{kind}_{lang}": str(absent / name) for lang in ("ZH", "DE")
               for kind, name in (("MODEL", "mymodel.h5"), ("TOKENIZER", "tokenizer.pkl"))}}


def _process_tree(root: int) -> list[int]:
    """`root` and every process below it (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
        except OSError:
            continue  # the process ended meanwhile
    return found


def status_kib(pid: int, name: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS, VmHWM, ...); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the summed VmRSS of a process and all its children on a thread, every `interval` s.

    `peak_mib` is the highest sum seen, `last_mib` the latest; `mark()` starts a new peak (e.g. after a
    warm-up) and returns the RSS at that moment. `hwm_mib()` is the kernel's own peak (VmHWM) summed over
    the tree, which catches spikes between samples.
    """

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak_mib = self.last_mib = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        total = sum(status_kib(pid, "VmRSS") for pid in _process_tree(self.pid)) / 1024
        with self._lock:
            self.last_mib, self.peak_mib = total, max(self.peak_mib, total)
            self.samples += 1
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def mark(self) -> float:
        now = self.sample()
        with self._lock:
            self.peak_mib = now
        return now

    def hwm_mib(self) -> float:
        return sum(status_kib(pid, "VmHWM") for pid in _process_tree(self.pid)) / 1024

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class SessionResult:
    """One browser session of a load run: its photos, when they were all captioned, what went wrong."""

    index: int
    files: list[Path]
    seconds: float | None = None  # upload → every caption on the page
    captions: list[str] = field(default_factory=list)
    error: str | None = None


UPLOADER = '[data-testid="stFileUploader"] input[type="file"]'


class _Gate:
    """Opens when every session has arrived (or one gave up early, so that none waits for it)."""

    def __init__(self, parties: int):
        self.parties, self.arrived, self.opened = parties, 0, asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.opened.set()
        await self.opened.wait()

    def give_up(self) -> None:
        self.opened.set()


async def _session(browser, url: str, result: SessionResult, gate: _Gate, timeout_ms: float, lang: str) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})  # its own cookies: a new session
    try:
        page = await context.new_page()
        await page.goto(url, timeout=timeout_ms)
        await page.get_by_text("Drop one or more photos").wait_for(timeout=timeout_ms)
        await gate.arrive()  # every session is on the page: all upload at once
        start = time.perf_counter()
        await page.locator(UPLOADER).set_input_files([str(f) for f in result.files])
        captions = [page.locator(f".st-key-caption_{i}_{lang}") for i in range(len(result.files))]
        await asyncio.gather(*(caption.wait_for(timeout=timeout_ms) for caption in captions))
        result.seconds = time.perf_counter() - start
        result.captions = [(await caption.inner_text()).strip() for caption in captions]
        problems = []
        for selector in ('[data-testid="stException"]', '[class*="st-key-error_"]'):
            if count := await page.locator(selector).count():
                problems.append(f"{count} × {selector} on the page")
        if not all(result.captions):
            problems.append(f"an empty caption in {result.captions}")
        result.error = "; ".join(problems) or None
    except Exception as error:  # a timeout or a browser failure: this session's error, the others go on
        message = str(error).strip().splitlines()
        result.error = f"{type(error).__name__}: {message[0] if message else ''}"
    finally:
        gate.give_up()
        await context.close()


async def _sessions(url: str, photo_sets: list[list[Path]], timeout_s: float, lang: str) -> list[SessionResult]:
    from playwright.async_api import async_playwright

    results = [SessionResult(i, list(files)) for i, files in enumerate(photo_sets)]
    gate = _Gate(len(results))
    async with async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(_session(browser, url, r, gate, timeout_s * 1000, lang) for r in results)),
                timeout=2 * timeout_s + 60)
        except asyncio.TimeoutError:
            for r in results:
                if r.seconds is None and r.error is None:
                    r.error = f"no result after {2 * timeout_s + 60:.0f} s"
        finally:
            await browser.close()
    return results


def caption_in_sessions(url: str, photo_sets: list[list[Path]], timeout_s: float = 300,
                        lang: str = "en") -> list[SessionResult]:
    """One real browser session (a Chromium context) per photo set, all at once: each opens the app, waits
    until all are on the page, uploads its photos and waits for every caption. Never raises for a
    session's failure: it is that session's `error` (a missing caption, an error box, a traceback)."""
    return asyncio.run(_sessions(url, photo_sets, timeout_s, lang))
