"""The views behind the pages at many classes: groups worst first, per-class extremes at a
glance, the sample images of chosen classes (on the three-class tiny analysis)."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from core.views import data as views, runs as vr, selection as vs
from core.methods import METHODS
from core.pipeline.analysis import load_run_dataset
from core.progress import silent
from tests.conftest import tiny_config
from tests.views.test_views import check_influential_examples


@pytest.fixture(scope="module")
def multi(tiny_multiclass, tiny_multiclass_analysis):
    return load_run_dataset(tiny_config(tiny_multiclass), tiny_multiclass_analysis, silent), tiny_multiclass_analysis


def test_group_order_puts_the_worst_group_of_any_run_first(multi):
    data, analysis = multi
    m = analysis.read_json("metrics")
    bars = pd.concat([views.per_group_accuracy({split: m}, split) for split in ("val", "test")])
    order = views.group_order(bars)
    assert sorted(order) == sorted(data.group_names) and len(order) == 6
    lowest = [min(m["val"]["per_group"][g], m["test"]["per_group"][g]) for g in order]
    assert lowest == sorted(lowest)
    hand = pd.DataFrame({"run": ["a", "a", "a", "b", "b", "b"], "group": ["x", "y", "z"] * 2,
                         "accuracy": [0.9, 0.5, 0.7, 0.2, 0.8, 0.7], "examples": 1})
    assert views.group_order(hand) == ["x", "y", "z"]  # x: 0.2 (run b); y: 0.5; z: 0.7


def test_extremes_overview_matches_each_class(multi):
    data, analysis = multi
    val_ids, groups = analysis.read_array("val_ids"), analysis.read_array("auto_groups")
    logits = analysis.read_array("erm_logits_val")
    overview = vs.extremes_overview(data, val_ids, analysis.read_array("auto_projection"), groups, logits,
                                    vs.pseudo_group_names(analysis))
    assert sorted(overview["class"]) == sorted(data.class_names) and len(overview) == 3
    assert overview["low: ERM accuracy"].is_monotonic_increasing
    y = data.labels[val_ids]
    for row in overview.to_dict("records"):
        cls = data.class_names.index(row["class"])
        for side, g in (("low", 2 * cls), ("high", 2 * cls + 1)):
            members = groups == g
            assert (y[members] == cls).all() and row[f"{side}: examples"] == members.sum()
            assert row[f"{side}: ERM accuracy"] == pytest.approx((logits[members].argmax(1) == cls).mean())
        assert row["low: examples"] + row["high: examples"] == (y == cls).sum()


def test_sample_ids_of_chosen_classes(multi):
    data, _ = multi
    chosen = data.class_names[1:]
    out = views.sample_ids(data, "train", per_class=4, classes=chosen)
    assert list(out) == chosen
    assert all((data.labels[ids] == data.class_names.index(name)).all() and len(ids) == 4 for name, ids in out.items())


def test_debias_page_marks_a_refusing_method_unavailable(multi):
    data, _ = multi
    train = data.idx("train")
    groups = data.groups.copy()
    groups[train[groups[train] == 0]] = 1  # group 0 has no training example any more
    lacking = dataclasses.replace(data, groups=groups)
    choices = {c["name"]: c for c in vr.method_choices(METHODS, [1], [{"attribute": "a", "value": "b", "class": "c"}],
                                                        lacking)}
    assert not choices["subg"]["available"]
    assert choices["subg"]["note"] == (f"cannot run on this dataset: it needs training examples in every group, "
                                       f"and group {data.group_names[0]!r} has none")
    assert all(c["available"] for name, c in choices.items() if name != "subg" and METHODS[name].refusal(lacking) is None)
    assert all(c["available"] for c in vr.method_choices(METHODS, [1], [{"attribute": "a"}], data))


def test_influential_examples_at_three_classes(multi):
    check_influential_examples(*multi)
