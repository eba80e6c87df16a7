"""The main path in a real browser (Playwright driving Debian's Chromium) on a fresh work
directory: start the analysis with tiny settings, wait for it, look at the extremes, retrain
with a chosen k and find the new run with its WGA in the comparison table. Screenshots of
every page go to test-artifacts/screenshots/."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from core.runs import RunStore
from tests.dashboard.conftest import ROOT, make_sample

pytestmark = pytest.mark.browser
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(tmp_path, data_root, workdir):
    """`streamlit run app.py` on a dataset folder and work directory (through the env
    defaults), yielding its URL; stopped afterwards. Skips when no chromium is installed."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    port = free_port()
    env = dict(os.environ, D3M_DATA=str(data_root), D3M_WORKDIR=str(workdir))
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
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def server(tmp_path):
    """The app on a fresh tiny sample and work directory."""
    for url in serve(tmp_path, make_sample(tmp_path / "data"), tmp_path / "work"):
        yield url, RunStore(tmp_path / "work")


def settle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(500)


def shot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main container, so the viewport is
    grown to the content's height for the screenshot."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate('document.querySelector(\'[data-testid="stMain"]\').scrollHeight')
    page.set_viewport_size({"width": 1400, "height": max(1000, int(height))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def go(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
    settle(page)


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_role("spinbutton", name=label)
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def js_number(x: float) -> str:
    """A float as the data grid's accessible text writes it (JavaScript's String(x))."""
    return str(int(x)) if x == int(x) else repr(x)


def test_main_path_in_a_browser(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        url, store = server
        try:
            page.goto(url)
            page.get_by_text("No analysis of").wait_for(timeout=60_000)
            settle(page)
            shot(page, "01-fresh-workdir")
            page.get_by_text("Analysis settings").click()
            set_number(page, "Models (T)", 2)
            set_number(page, "Epochs", 2)
            set_number(page, "Projection dim", 256)
            page.get_by_role("button", name="Start analysis").click()
            page.get_by_role("button", name="Cancel").wait_for(timeout=60_000)
            shot(page, "02-analysis-running")
            page.get_by_text("Test worst-group accuracy").first.wait_for(timeout=300_000)
            settle(page)
            shot(page, "03-data-and-model")

            page.get_by_role("link", name="Extremes per class").click()
            page.get_by_text("ERM accuracy on this side").first.wait_for(timeout=60_000)
            settle(page)
            shot(page, "04-extremes")
            go(page, "Alignment")
            shot(page, "05-alignment")

            go(page, "Subpopulations")  # a click on the heatmap's bottom-left cell opens that cell
            [analysis] = store.list("analysis")
            subpop = pd.read_csv(analysis.file("subpopulations.csv"), dtype={"value": str})
            cells = subpop[subpop["attribute"] == "colour"]
            cell = cells[(cells["value"] == cells["value"].min()) & (cells["class"] == cells["class"].min())].iloc[0]
            plot = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
            n_values = cells["value"].nunique()
            page.mouse.click(plot["x"] + plot["width"] / 4, plot["y"] + plot["height"] * (1 - 0.5 / n_values))
            expect(page.get_by_text(f"{cell['class']} with colour = {cell['value']}")).to_be_visible(timeout=30_000)
            expect(page.get_by_test_id("stMetric").first).to_contain_text(str(cell["count"]))
            settle(page)
            shot(page, "06-subpopulations")

            go(page, "Debias")
            page.get_by_text("D3M settings (defaults preset)").click()
            expect(page.get_by_role("spinbutton", name="beta")).to_have_value("1", timeout=30_000)
            slider = page.get_by_role("slider").first
            slider.focus()
            slider.press("Home")
            for _ in range(25):
                slider.press("ArrowRight")
            settle(page)
            expect(slider).to_have_value("25")
            page.get_by_role("button", name="Retrain").click()
            page.get_by_text(re.compile(r"Latest result: D3M, 25 examples removed")).wait_for(timeout=300_000)
            settle(page)
            shot(page, "07-debias")

            go(page, "Compare runs")
            [run] = [r for r in store.list("debias") if r.config()["method"] == "d3m"]
            wga = run.read_json("metrics")["test"]["wga"]
            grid = page.locator('[data-testid="stDataFrame"]').first
            # the grid's accessible text, cells run together: method, k, seed, n removed, test WGA, ..., run id
            row = re.compile(re.escape(f"D3M{25}{0}{25}{js_number(wga)}") + r"[^A-Z]*done" + re.escape(run.id))
            expect(grid).to_contain_text(row, timeout=30_000)
            shot(page, "08-compare")
        finally:
            browser.close()
