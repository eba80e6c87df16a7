"""The dashboard in a real browser: the one way this project starts the app and Chromium, shared
by the browser tests (tests/dashboard/test_browser*.py) and benchmarks.pages. A helper module,
not a benchmark (nothing to run).

    with serve({"D3M_DATA": str(data), "D3M_WORKDIR": str(work)}, log=work / "server.log") as app:
        with browser_page() as page:
            page.goto(app.url)

`serve` runs `streamlit run app.py` on a free port of 127.0.0.1 and waits for its health check;
`browser_page` opens a page in Debian's Chromium (apt-get install -y chromium) through
Playwright (`playwright install` downloads a browser and fails here, so the installed one is
named by executable_path), with a fresh profile each time.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'  # Streamlit has finished its script run
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}


class App(NamedTuple):
    url: str
    pid: int  # the streamlit server's process


def chromium() -> str | None:
    """Debian's Chromium (/usr/bin/chromium), or None when it is not installed."""
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    """Streamlit's health check answers (asked directly, whatever proxy the environment names)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(f"{url}/_stcore/health", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Until the app answers its health check; RuntimeError (with the log's end) if it exits or times out."""
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the app did not start at {url}:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serve(env: Mapping[str, str | None], log: Path, timeout: float = 60) -> Iterator[App]:
    """`streamlit run app.py` with os.environ updated by `env` (a None value unsets that
    variable), its output in `log`; yields the app's URL and pid once it is healthy, and
    stops it on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for name in [k for k, v in env.items() if v is None]:
        full_env.pop(name, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                                 "--server.address", "127.0.0.1", "--server.port", str(port)],
                                cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(proc, url, Path(log), timeout)
            yield App(url, proc.pid)
        finally:
            stop(proc)


@contextmanager
def browser_page(viewport: Mapping[str, int] = VIEWPORT) -> Iterator:
    """A Playwright page in Debian's Chromium (CHROMIUM_ARGS, a fresh user-data-dir); the
    browser is closed and its profile deleted on exit."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    if executable is None:
        raise RuntimeError("Chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="d3m-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=executable, headless=True,
                                                       args=CHROMIUM_ARGS, viewport=dict(viewport))
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
