"""Every page on data as users bring it, in a real browser (Playwright + Debian's Chromium at
1400 px): labels 0/1, ten classes labelled 0..9, and 20,000 training examples. On each page the
main control is used; no page shows an exception, classes are drawn on categorical axes, and no
chart's legend, colour bar or annotation lies over an axis label, a title or one another (checked from the
rendered SVG's boxes). Screenshots: test-artifacts/screenshots/data-<dataset>-<page>.png."""
from __future__ import annotations

import json
import re

import pytest

from benchmarks.pages import TARGET as SYNTHETIC, add_runs, make_data
from core.config import analysis_config
from core.pipeline.analysis import create_analysis_run, start_analysis
from core.runs import jobs
from core.runs.store import RunStore
from sample_data.make_sample import generate
from tests.conftest import tiny_config
from tests.dashboard.browser import go, served, settle, shot

pytestmark = pytest.mark.browser

# Boxes of every chart's texts and of what is laid over the plot (legend, colour bar, annotations);
# a pair of boxes overlapping by more than 1 px is reported as "chart i: A over 'B'".
OVERLAPS = """() => {
  const out = [];
  const box = e => e.getBoundingClientRect();
  const hit = (a, b) => a.width > 0 && b.width > 0 && a.left < b.right - 1 && b.left < a.right - 1
                        && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  document.querySelectorAll('.js-plotly-plot').forEach((gd, i) => {
    const labels = [...gd.querySelectorAll('g.xtick text, g.ytick text, .g-xtitle text, .g-ytitle text, .g-gtitle text')]
      .map(e => [e.textContent, box(e)]);
    const over = [...gd.querySelectorAll('g.legend > rect.bg, g.colorbar rect.cbbg, g.annotation-text-g')]
      .map(e => [e.closest('g.legend') ? 'legend' : e.closest('g.colorbar') ? 'colour bar' : 'annotation ' + e.textContent, box(e)]);
    for (const [name, a] of over) for (const [text, b] of labels) if (hit(a, b)) out.push(`chart ${i}: ${name} over '${text}'`);
    over.forEach(([name, a], k) => over.slice(k + 1).forEach(([other, b]) => { if (hit(a, b)) out.push(`chart ${i}: ${name} over ${other}`); }));
    const xt = [...gd.querySelectorAll('g.xtick text')].map(e => [e.textContent, box(e)]);
    for (let k = 1; k < xt.length; k++) if (hit(xt[k - 1][1], xt[k][1])) out.push(`chart ${i}: x labels '${xt[k - 1][0]}' and '${xt[k][0]}'`);
  });
  return out;
}"""


def axis_types(page) -> list[dict]:
    return json.loads(page.evaluate(
        "JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].map(gd => ({x: gd._fullLayout.xaxis.type, "
        "y: gd._fullLayout.yaxis.type, traces: gd.data.map(t => t.type)})))"))


def check(page, name: str, step: str) -> None:
    """No exception on the page, no overlapping texts; a screenshot."""
    settle(page)
    assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").first.inner_text()
    assert page.evaluate(OVERLAPS) == [], step
    shot(page, f"data-{name}-{step}")


def pick(page, label: str, option: str, widget: str = "stSelectbox") -> None:
    box = page.get_by_test_id(widget).filter(has_text=label).first
    box.scroll_into_view_if_needed()
    box.locator("input").first.click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")  # a multiselect's list stays open otherwise
    settle(page)


def visit_every_page(page, url: str, name: str, classes: list[str]) -> None:
    page.goto(url)
    page.get_by_text("Test worst-group accuracy").first.wait_for(timeout=300_000)
    pick(page, "Count examples by", "group")
    check(page, name, "1-data")

    go(page, "Extremes per class")
    pick(page, "Class (lowest", classes[-1])
    assert page.locator(".gtitle").first.text_content().startswith(f"{classes[-1]}: validation examples")
    check(page, name, "2-extremes")

    go(page, "Alignment")
    pick(page, "Class", classes[-1], "stMultiSelect")
    types = axis_types(page)
    scatter = next(t for t in types if "scatter" in t["traces"] or "scattergl" in t["traces"])
    assert scatter["y"] == "category"  # classes 0 and 1 are rows, not a continuous axis
    check(page, name, "3-alignment")

    go(page, "Subpopulations")
    pick(page, "Attribute", "size" if name != "20k" else "source")
    heat = next(t for t in axis_types(page) if "heatmap" in t["traces"])
    assert heat["x"] == "category" and heat["y"] == "category"
    check(page, name, "4-subpopulations")

    go(page, "Debias")
    page.get_by_text(re.compile(r"^Auto-D3M")).first.click()
    settle(page)
    page.get_by_text("A_i < 0 heuristic: k =").first.wait_for(timeout=60_000)
    check(page, name, "5-debias")

    go(page, "Compare runs")
    check(page, name, "6-compare")
    go(page, "Ablations")
    check(page, name, "7-ablations")


def test_pages_with_labels_0_and_1(page, tmp_path, tiny_numeric):
    with served(tmp_path, tiny_numeric.data_root, tiny_numeric.workdir) as url:
        visit_every_page(page, url, "binary01", ["0", "1"])


def test_pages_with_ten_classes_labelled_0_to_9(page, tmp_path):
    data_root, workdir = tmp_path / "data10", tmp_path / "work"
    generate(data_root, seed=0, scale=0.2, n_classes=10, labels="int")  # 600 train, 80 val, 160 test
    store = RunStore(workdir)
    analysis = start_analysis(store, tiny_config(data_root), inline=True)
    with served(tmp_path, data_root, workdir) as url:
        visit_every_page(page, url, "ten01", [str(c) for c in range(10)])
    assert analysis.status()["state"] == "done"


def test_pages_with_20000_training_examples(page, tmp_path):
    """A synthetic analysis (benchmarks.pages: random scores and logits, nothing trained) of
    20,000 training examples labelled 0 / 1, with three finished runs to compare."""
    root = make_data(tmp_path / "data", {"train": 20_000, "val": 400, "test": 400}, classes=("0", "1"))
    store = RunStore(tmp_path / "work")
    analysis = create_analysis_run(store, analysis_config(root))
    jobs.run_inline(analysis, SYNTHETIC)
    add_runs(store, analysis, 3)
    with served(tmp_path, root, tmp_path / "work") as url:
        visit_every_page(page, url, "20k", ["0", "1"])
