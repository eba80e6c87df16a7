"""The Ablations page in a real browser (Playwright + Chromium): start a tiny study (one cell,
run on a local Ray by the study's job), watch it finish, read the table, switch the chart's
metric and follow the cell's link to the Compare page. Screenshots go to
test-artifacts/screenshots/ (09-ablations-*.png)."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from core.runs import RunStore
from tests.dashboard.conftest import ROOT, make_sample
from tests.dashboard.test_browser import CHROMIUM_ARGS, free_port, settle, shot

pytestmark = pytest.mark.browser
STUDY = """\
title = "Tiny beta study"
seeds = [0]
methods = ["d3m"]

[analysis]
data = "{data}"
epochs = 1
n_models = 1
proj_dim = 128
device = "cpu"

[grid]
"d3m.beta" = [1.0]
"""


@pytest.fixture
def server(tmp_path):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    data = make_sample(tmp_path / "data")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "tiny.toml").write_text(STUDY.format(data=data))
    port = free_port()
    env = dict(os.environ, D3M_DATA=str(data), D3M_WORKDIR=str(tmp_path / "work"),
               D3M_STUDIES=str(tmp_path / "studies"))
    env.pop("D3M_RAY_ADDRESS", None)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", RunStore(tmp_path / "work")
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_ablations_in_a_browser(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        url, store = server
        try:
            page.goto(url)
            settle(page)
            page.get_by_role("link", name="Ablations").click()
            page.get_by_role("button", name="Start study").wait_for(timeout=60_000)
            settle(page)
            page.get_by_role("button", name="Start study").click()
            page.get_by_role("button", name="Cancel").wait_for(timeout=60_000)
            shot(page, "09-ablations-running")
            page.get_by_role("heading", name=re.compile(r"^Table \(")).wait_for(timeout=400_000)
            settle(page)
            [study] = store.list("study")
            [cell] = study.read_json("cells")
            assert cell["state"] == "done", cell
            wga = store.get(cell["run"]).read_json("metrics")["test"]["wga"]
            grid = page.locator('[data-testid="stDataFrame"]').last
            expect(grid).to_contain_text("beta=1.0", timeout=30_000)
            expect(grid).to_contain_text(f"{100 * wga:.1f}", timeout=30_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the bar chart drawn
            page.wait_for_timeout(1000)
            shot(page, "09-ablations-table")
            page.get_by_role("button", name="Open on the Compare page").click()
            page.get_by_role("heading", name="Compare runs").wait_for(timeout=60_000)
            settle(page)
            expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text(cell["run"], timeout=30_000)
            shot(page, "09-ablations-compare")
        finally:
            browser.close()
