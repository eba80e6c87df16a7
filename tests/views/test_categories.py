"""Class, group and attribute values are categories: the same dataset with its labels written as
names, as integers 0/1 (and 0..2) or as False/True gives the same cells, ids, counts and orders in
every view, and a table written and read back never turns the class "0" into the integer 0.

Expected ids come from the raw metadata.csv read with the csv module (no project code)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import analysis_config
from core.data import categories
from core.data.dataset import load_dataset
from core.io import write_csv_atomic
from core.methods.selection import subpopulations
from core.runs import annotations
from core.runs.store import RunStore
from core.views import data as views, selection as vs
from sample_data.make_sample import generate

SCALE = 0.05  # 150 train / 20 val / 40 test images: the views, not a model, are under test


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict:
    """The same rows with three label styles, for 2 and 3 classes (bool only for 2)."""
    out = {}
    for n_classes in (2, 3):
        for style in ("names", "int", "bool") if n_classes == 2 else ("names", "int"):
            root = tmp_path_factory.mktemp(f"{style}{n_classes}")
            generate(root, seed=0, scale=SCALE, n_classes=n_classes, labels=style)
            out[(n_classes, style)] = root
    return out


def raw_rows(root: Path) -> list[dict]:
    with open(root / "metadata.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def translation(names_root: Path, other_root: Path, column: str) -> dict[str, str]:
    """How the other variant writes each value of `column` of the names variant (row by row)."""
    pairs = {(a[column], b[column]) for a, b in zip(raw_rows(names_root), raw_rows(other_root))}
    assert len(pairs) == len({a for a, _ in pairs}), pairs  # one-to-one
    return dict(pairs)


def views_of(root: Path) -> dict:
    """Cells -> training ids through the views, from subpopulations.csv written and read back."""
    data = load_dataset(analysis_config(root).data)
    train = data.idx("train")
    align = np.sin(train * 1.3)  # any fixed score per example
    table = subpopulations(align, data.labels[train], data.metadata.iloc[train], data.attributes, data.class_names)
    path = root / "subpopulations_test.csv"
    write_csv_atomic(path, table)
    stored = categories.read_table(path)
    cells = {}
    for attribute in ("size", "place"):
        hm = vs.heatmap(stored, attribute, class_names=data.class_names)
        assert list(hm["mean"].columns) == data.class_names  # classes as names, in the table's order
        for cell in vs.cells_of(hm, attribute):
            assert all(isinstance(v, str) for v in cell.values())
            cells[(cell["class"], attribute, cell["value"])] = vs.cell_ids(data, train, cell).tolist()
    return {"data": data, "cells": cells, "stored": stored}


@pytest.mark.parametrize("n_classes,style", [(2, "int"), (2, "bool"), (3, "int")])
def test_labels_as_integers_or_booleans_give_the_same_cells_and_ids(variants, n_classes, style):
    names_root, other_root = variants[(n_classes, "names")], variants[(n_classes, style)]
    cls = translation(names_root, other_root, "label")
    size = translation(names_root, other_root, "size")
    base, other = views_of(names_root), views_of(other_root)
    assert set(base["cells"]) and len(base["cells"]) == len(other["cells"])
    for (c, attribute, value), ids in base["cells"].items():
        v = size[value] if attribute == "size" else value
        assert other["cells"][(cls[c], attribute, v)] == ids
        # independent: the rows of metadata.csv (id = data row) of that class, value and split
        expected = [i for i, r in enumerate(raw_rows(other_root))
                    if r["split"] == "train" and r["label"] == cls[c] and r[attribute] == v]
        assert ids == expected and ids
    if style == "int":
        assert other["data"].class_names == [str(c) for c in range(n_classes)]
        assert other["stored"]["class"].map(type).eq(str).all()  # "0" stays "0" on the way back
    a, b = views.counts_by(base["data"], "class"), views.counts_by(other["data"], "class")
    assert {cls[c]: t for c, t in zip(a["class"], a["total"])} == dict(zip(b["class"], b["total"]))


def test_a_class_given_as_a_number_matches_its_name(variants):
    root = variants[(2, "int")]
    data = load_dataset(analysis_config(root).data)
    train = data.idx("train")
    by_name = vs.cell_ids(data, train, {"attribute": "size", "value": "1", "class": "0"})
    by_number = vs.cell_ids(data, train, {"attribute": "size", "value": 1, "class": np.int64(0)})
    assert by_name.tolist() == by_number.tolist() and len(by_name)
    table = vs.train_table(data, train, np.zeros(len(train)))
    assert (vs.filter_mask(table, [0]) == vs.filter_mask(table, ["0"])).all() and vs.filter_mask(table, [0]).any()
    assert vs.filter_mask(table, None, {"size": [1]}).sum() == (table["size"] == "1").sum() > 0
    with pytest.raises(ValueError, match="unknown attribute 'shape'"):
        data.in_cell(train, {"attribute": "shape", "value": "1", "class": "0"})


def test_subpopulations_page_views_survive_pandas_reading_the_class_as_int(variants):
    """The Subpopulations crash (`0 is not in list`): subpopulations.csv read back by plain
    pandas holds the classes as integers; the views still match them by name."""
    root = variants[(2, "int")]
    data = load_dataset(analysis_config(root).data)
    train = data.idx("train")
    table = subpopulations(np.cos(train), data.labels[train], data.metadata.iloc[train], data.attributes,
                           data.class_names)
    write_csv_atomic(root / "sub_plain.csv", table)
    plain = pd.read_csv(root / "sub_plain.csv")
    assert pd.api.types.is_integer_dtype(plain["class"])  # what broke the page
    hm = vs.heatmap(plain, "size", class_names=data.class_names)
    assert list(hm["mean"].columns) == ["0", "1"] and list(hm["mean"].index) == ["0", "1"]
    for cell in vs.cells_of(hm, "size"):
        assert len(vs.cell_ids(data, train, cell)) == hm["count"].loc[cell["value"], cell["class"]]


def test_stored_tables_keep_names_that_look_like_numbers_or_missing_values(tmp_path):
    frame = pd.DataFrame({"attribute": ["a", "a", "a"], "value": ["NA", "None", "007"], "class": ["0", "1", "10"],
                          "mean_alignment": [1e-7, -2.5e-7, 0.0], "count": [3, 4, 5]})
    write_csv_atomic(tmp_path / "t.csv", frame)
    back = categories.read_table(tmp_path / "t.csv")
    assert back["value"].tolist() == ["NA", "None", "007"] and back["class"].tolist() == ["0", "1", "10"]
    assert back["mean_alignment"].tolist() == [1e-7, -2.5e-7, 0.0] and back["count"].tolist() == [3, 4, 5]
    assert categories.order(["10", "2", "1"]) == ["1", "2", "10"] and categories.order([True, False]) == ["False", "True"]
    mixed = categories.as_text(pd.DataFrame({"label": [0, 1, True, "x"], "size": [1.5, None, "a", 2]}))
    assert mixed["label"].tolist() == ["0", "1", "True", "x"] and mixed["size"].tolist() == ["1.5", "", "a", "2"]


def test_an_excluded_cell_is_stored_by_name(tmp_path):
    run = RunStore(tmp_path).create("analysis", {})
    write_csv_atomic(run.file("subpopulations.csv"), pd.DataFrame(
        {"attribute": ["size"], "value": ["1"], "class": ["0"], "mean_alignment": [-1e-6], "count": [4]}))
    assert annotations.toggle_cell(run, {"attribute": "size", "value": 1, "class": 0}, True) == [
        {"attribute": "size", "value": "1", "class": "0"}]
    assert annotations.toggle_cell(run, {"attribute": "size", "value": "1", "class": "0"}, False) == []
    with pytest.raises(ValueError, match="no training example of class '1' has size = '1'"):
        annotations.toggle_cell(run, {"attribute": "size", "value": "1", "class": "1"}, True)
