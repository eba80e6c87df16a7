"""The Ablations page in a real browser (Playwright + Chromium): start a tiny study (one cell,
run on a local Ray by the study's job), watch it finish, read the table, switch the chart's
metric and follow the cell's link to the Compare page. Screenshots go to
test-artifacts/screenshots/ (09-ablations-*.png)."""
from __future__ import annotations

import re

import pytest

from core.runs.store import RunStore
from tests.dashboard.browser import served, settle, shot
from tests.dashboard.fixtures import make_sample
from tests.studies.test_studies_ray import study_file

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    """The app with a one-cell study file of a fresh tiny sample in D3M_STUDIES."""
    data = make_sample(tmp_path / "data")
    (tmp_path / "studies").mkdir()
    study_file(tmp_path / "studies", data, '[grid]\n"d3m.beta" = [1.0]\n', name="tiny")
    with served(tmp_path, data, tmp_path / "work", D3M_STUDIES=str(tmp_path / "studies")) as url:
        yield url, RunStore(tmp_path / "work")


def test_ablations_in_a_browser(page, server):
    from playwright.sync_api import expect

    url, store = server
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
