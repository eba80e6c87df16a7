"""The main path in a real browser (Playwright driving Debian's Chromium) on a fresh work
directory: start the analysis with tiny settings, wait for it, look at the extremes, flag
examples on the Alignment page by lasso and by row selection, retrain without them (the
`flagged` method) and with a chosen k, and find the new run with its WGA in the comparison
table. Screenshots of every page go to test-artifacts/screenshots/."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from core.runs.store import RunStore
from core.views.distributions import unit
from tests.dashboard.browser import go, served, settle, shot
from tests.dashboard.fixtures import make_sample

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    """The app on a fresh tiny sample and work directory."""
    with served(tmp_path, make_sample(tmp_path / "data"), tmp_path / "work") as url:
        yield url, RunStore(tmp_path / "work")


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_role("spinbutton", name=label)
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def js_number(x: float) -> str:
    """A float as the data grid's accessible text writes it (JavaScript's String(x))."""
    return str(int(x)) if x == int(x) else repr(x)


def most_negative(analysis) -> tuple[np.ndarray, np.ndarray]:
    """Training example ids by increasing alignment, and the sorted alignments (from the run store)."""
    align = np.asarray(analysis.read_array("alignment"))
    order = np.argsort(align, kind="stable")
    return np.asarray(analysis.read_array("train_ids"))[order], align[order]


def lasso_left_of(page, x_value: float, factor: float = 1.0) -> None:
    """Lasso every point of the Alignment page's scatter plot (its last plot) with A_i < x_value:
    a polygon over the plot area's full height, from its left edge to x_value's pixel (the plot
    shows A_i times `factor`, its unit)."""
    x_value *= factor
    gd = page.locator(".js-plotly-plot").last
    gd.scroll_into_view_if_needed()
    area = gd.locator(".nsewdrag").first.bounding_box()
    x = area["x"] + page.evaluate("([el, v]) => el._fullLayout.xaxis.d2p(v)", [gd.element_handle(), x_value])
    left, top, bottom = area["x"] + 2, area["y"] + 2, area["y"] + area["height"] - 2
    page.mouse.move(left, top)
    page.mouse.down()
    for px, py in [(x, top), (x, bottom), (left, bottom), (left, top + 1)]:
        page.mouse.move(px, py, steps=8)
    page.mouse.up()
    settle(page)


def select_rows(page, rows: list[int]) -> None:
    """Tick rows (0-based, on the current page) of the Alignment page's example table: the
    checkbox column of the data grid (header and rows 35 px high)."""
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    for r in rows:
        page.mouse.click(box["x"] + 17, box["y"] + 35 * (r + 1) + 18)
        settle(page)


def flag_on_alignment_page(page, store) -> list[int]:
    """Flag the 3 most negative examples by lasso, clear, then the next 3 by row selection;
    each time the flagged set stored with the analysis is checked. Returns the final set."""
    from playwright.sync_api import expect

    [analysis] = store.list("analysis")
    ids, align = most_negative(analysis)
    lasso_left_of(page, float(align[2] + align[3]) / 2, unit(align)[0])
    page.get_by_role("button", name="Flag 3 selected").click()
    settle(page)
    assert analysis.read_json("flagged") == sorted(ids[:3].tolist())
    expect(page.get_by_test_id("stMetric").nth(2)).to_contain_text("3")
    gd = page.locator(".js-plotly-plot").last.locator(".nsewdrag").first
    gd.dblclick()  # clears the lasso selection
    settle(page)
    page.get_by_role("button", name="Clear all flags").click()
    settle(page)
    assert analysis.read_json("flagged") == []
    select_rows(page, [3, 4, 5])  # the table is sorted by A_i, ascending: ranks 4-6
    page.get_by_role("button", name="Flag 3 selected").click()
    settle(page)
    assert analysis.read_json("flagged") == sorted(ids[3:6].tolist())
    return sorted(ids[3:6].tolist())


def retrain_flagged(page, store, flagged: list[int]) -> None:
    """The Debias page's `flagged` method removes exactly the flagged examples."""
    go(page, "Debias")
    page.get_by_text(re.compile(r"^Flagged examples")).click()
    settle(page)
    page.get_by_text("Removes the 3 examples flagged on the Alignment page.").wait_for(timeout=30_000)
    page.get_by_text("Also train a random control").click()  # unticked: one retrain is enough here
    settle(page)
    page.get_by_role("button", name="Retrain").click()
    page.get_by_text(re.compile(r"Latest result: Flagged examples, 3 examples removed")).wait_for(timeout=300_000)
    settle(page)
    [run] = [r for r in store.list("debias") if r.config()["method"] == "flagged"]
    assert sorted(np.asarray(run.read_array("removed_ids")).tolist()) == flagged
    page.get_by_text(re.compile(r"^D3M")).first.click()  # back to D3M, with its control, for the main path
    page.get_by_text("Also train a random control").click()
    settle(page)


def start_tiny_analysis(page) -> None:
    """On a fresh work directory: start an analysis with T = 2, 2 epochs, 256 dimensions and wait for it."""
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


def open_subpopulation_cell(page, store) -> None:
    """A click on the Subpopulations heatmap's bottom-left cell opens that cell."""
    from playwright.sync_api import expect

    go(page, "Subpopulations")
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


def retrain_d3m(page, k: int) -> None:
    """The Debias page: D3M's preset defaults, k set with the slider's keys, retrained."""
    from playwright.sync_api import expect

    go(page, "Debias")
    page.get_by_text("D3M settings (defaults preset)").click()
    expect(page.get_by_role("spinbutton", name="beta")).to_have_value("1", timeout=30_000)
    slider = page.get_by_role("slider").first
    slider.focus()
    slider.press("Home")
    for _ in range(k):
        slider.press("ArrowRight")
    settle(page)
    expect(slider).to_have_value(str(k))
    page.get_by_role("button", name="Retrain").click()
    page.get_by_text(re.compile(rf"Latest result: D3M, {k} examples removed")).wait_for(timeout=300_000)
    settle(page)
    shot(page, "07-debias")


def find_in_compare(page, store, k: int) -> None:
    """The D3M run's row, with its test WGA, in the Compare page's table."""
    from playwright.sync_api import expect

    go(page, "Compare runs")
    [run] = [r for r in store.list("debias") if r.config()["method"] == "d3m"]
    wga = run.read_json("metrics")["test"]["wga"]
    grid = page.locator('[data-testid="stDataFrame"]').first
    # the grid's accessible text, cells run together: method, k, seed, n removed, test WGA, ..., run id
    row = re.compile(re.escape(f"D3M{k}{0}{k}{js_number(wga)}") + r"[^A-Z]*done" + re.escape(run.id))
    expect(grid).to_contain_text(row, timeout=30_000)
    shot(page, "08-compare")


def test_main_path_in_a_browser(page, server):
    url, store = server
    page.goto(url)
    start_tiny_analysis(page)
    page.get_by_role("link", name="Extremes per class").click()
    page.get_by_text("ERM accuracy on this side").first.wait_for(timeout=60_000)
    settle(page)
    shot(page, "04-extremes")
    go(page, "Alignment")
    flagged = flag_on_alignment_page(page, store)
    shot(page, "05-alignment")
    retrain_flagged(page, store, flagged)
    open_subpopulation_cell(page, store)
    retrain_d3m(page, k=25)
    find_in_compare(page, store, k=25)
