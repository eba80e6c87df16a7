"""Every page on a dataset whose labels (and the `size` attribute) are the integers 0 and 1,
through AppTest: no page raises (the Subpopulations page used to stop with `0 is not in list`),
classes stay names ("0", "1") and every chart draws them on a categorical axis."""
from __future__ import annotations

import csv
import json

import pytest

from core.views import data as views
from tests.dashboard.fixtures import open_app

PAGES = ("data_model", "extremes", "alignment", "subpopulations", "debias", "compare")


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def category_axes(spec: dict) -> set[str]:
    layout = spec["layout"]
    return {name for name, axis in layout.items() if name[1:5] == "axis" and axis.get("type") == "category"}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_on_numeric_labels(monkeypatch, tiny_numeric, page):
    at = open_app(monkeypatch, tiny_numeric.data_root, tiny_numeric.workdir, page)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert tiny_numeric.data.class_names == ["0", "1"]


def test_subpopulations_on_numeric_labels(monkeypatch, tiny_numeric):
    a = tiny_numeric.analysis
    a.file("excluded_cells.json", create_parent=False).unlink(missing_ok=True)
    at = open_app(monkeypatch, tiny_numeric.data_root, tiny_numeric.workdir, "subpopulations")
    at.selectbox(key="sub_attr").select("size").run()
    heat = charts(at)[0]
    assert heat["data"][0]["x"] == ["0", "1"] and heat["data"][0]["y"] == ["0", "1"]
    assert {"xaxis", "yaxis"} <= category_axes(heat)
    box = at.selectbox(key="sub_cell_size")
    assert set(box.options) == {f"{c} with size = {v}" for c in "01" for v in "01"}
    box.select("1 with size = 0").run()
    with open(tiny_numeric.data_root / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = sum(r["split"] == "train" and r["label"] == "1" and r["size"] == "0" for r in rows)
    assert at.metric[0].value == f"{expected:,}" and expected > 0
    at.toggle(key="sub_exclude_1 with size = 0").set_value(True).run()
    assert not at.exception
    assert views.persisted(a, "excluded_cells", []) == [{"attribute": "size", "value": "0", "class": "1"}]
    a.file("excluded_cells.json", create_parent=False).unlink(missing_ok=True)


def test_alignment_and_data_charts_use_category_axes(monkeypatch, tiny_numeric):
    at = open_app(monkeypatch, tiny_numeric.data_root, tiny_numeric.workdir, "alignment")
    hist, scatter = charts(at)[:2]
    assert {t["name"] for t in hist["data"]} == {"0", "1"}
    assert "yaxis" in category_axes(scatter)
    assert set(scatter["layout"]["yaxis"]["categoryarray"]) == {"0", "1"}
    at.multiselect(key="align_classes").select("1").run()
    assert set(at.dataframe[0].value["class"]) == {"1"}
    at.switch_page("dashboard/pages/data_model.py").run()
    bars = [c for c in charts(at) if any(t.get("orientation") == "h" for t in c["data"])]
    assert bars and all("yaxis" in category_axes(c) for c in bars)
