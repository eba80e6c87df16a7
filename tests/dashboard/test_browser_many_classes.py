"""The pages at ten classes and twenty groups, in a real browser (Playwright + Debian's
Chromium), on a pre-computed tiny analysis of the generator's ten-class variant with an ERM,
a D3M and a random-control run. Screenshots go to test-artifacts/screenshots/10c-*.png."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from core.views import data as views
from core.pipeline.analysis import start_analysis
from core.pipeline.debias import start_debias
from core.runs.store import RunStore
from sample_data.make_sample import generate
from tests.conftest import tiny_config
from tests.dashboard.browser import go, served, settle, shot

pytestmark = pytest.mark.browser


@pytest.fixture
def ten_classes(tmp_path):
    data_root, workdir = tmp_path / "data10", tmp_path / "work"
    generate(data_root, seed=0, scale=0.2, n_classes=10)  # 600 train, 80 val (4 per group), 160 test
    store = RunStore(workdir)
    analysis = start_analysis(store, tiny_config(data_root), inline=True)
    for method in ("erm", "d3m"):
        start_debias(store, analysis.id, method, {"seed": 0}, inline=True)
    with served(tmp_path, data_root, workdir) as url:
        yield url, store, analysis


def plot_data(page, index: int = 0) -> list[dict]:
    """The traces (x, y, name, orientation) of the page's index-th Plotly chart."""
    return json.loads(page.evaluate(
        f"JSON.stringify(document.querySelectorAll('.js-plotly-plot')[{index}].data.map("
        "t => ({x: Array.from(t.x || []), y: Array.from(t.y || []), name: t.name, orientation: t.orientation})))"))


def bar_groups(page) -> list[str]:
    """The groups of the page's horizontal per-group bar chart, top to bottom."""
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    every = [t for i in range(page.locator(".js-plotly-plot").count()) for t in plot_data(page, i)]
    traces = [t for t in every if t.get("orientation") == "h"]
    assert traces and all(t["y"] == traces[0]["y"] for t in traces), every
    return traces[0]["y"]


def test_ten_classes_and_twenty_groups_in_a_browser(page, ten_classes):
    """Data and model: 20 groups worst first, images of chosen classes only; Extremes: one
    class at a time with an overview of all ten; Subpopulations: a 10-class heatmap;
    Compare: 20 groups worst first over the chosen runs."""
    from playwright.sync_api import expect

    url, store, analysis = ten_classes
    metrics = analysis.read_json("metrics")
    erm_bars = pd.concat([views.per_group_accuracy({split: metrics}, split) for split in ("val", "test")])
    page.goto(url)
    page.get_by_text("Test worst-group accuracy").first.wait_for(timeout=120_000)
    settle(page)
    expect(page.get_by_text("10 classes, 20 groups")).to_be_visible()
    assert bar_groups(page) == views.group_order(erm_bars) and len(views.group_order(erm_bars)) == 20
    classes = sorted(pd.read_csv(analysis.config()["data"]["root"] + "/metadata.csv")["label"].unique())
    headed = [t for t in page.locator("strong").all_inner_texts() if t in classes]
    assert headed == classes[:3]  # sample images of the three chosen classes, not ten stacked
    expect(page.get_by_text("arrow on water").first).to_be_visible()
    shot(page, "10c-01-data-and-model")

    page.get_by_role("link", name="Extremes per class").click()
    page.get_by_text("ERM accuracy on this side").first.wait_for(timeout=60_000)
    settle(page)
    assert page.get_by_text("ERM accuracy on this side").count() == 2  # one class, not ten sections
    expect(page.get_by_text("All 10 classes at a glance")).to_be_visible()
    shot(page, "10c-02-extremes")

    go(page, "Subpopulations")
    heat = plot_data(page)[0]
    assert len(set(heat["x"])) == 10
    shot(page, "10c-03-subpopulations")

    go(page, "Compare runs")
    runs = {"ERM (analysis)": metrics, **{r.config()["method"]: r.read_json("metrics")
                                          for r in store.list("debias")}}
    shown = views.per_group_accuracy(runs)  # the four runs picked by default
    assert bar_groups(page) == views.group_order(shown)
    shot(page, "10c-04-compare")
