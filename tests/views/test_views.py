"""core/views*.py on the tiny analysed sample: the numbers the pages show are the real ones."""
from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.runs import annotations

from core.views import data as views, distributions, runs as vr, selection as vs
from core.config import analysis_config
from core.data.validate import validate_dataset
from core.methods import METHODS
from core.methods.selection import parse_k_sweep
from core.views.summary import pipeline_summary
from tests.dense import dense_scores


def test_counts_equal_the_metadata(tiny):
    meta = pd.read_csv(tiny.data_root / "metadata.csv", dtype=str)
    splits = views.split_counts(tiny.data).set_index("split")["examples"]
    assert splits.to_dict() == meta["split"].value_counts().reindex(["train", "val", "test"]).to_dict()
    for by, column in (("class", "label"), ("group", "group"), ("place", "place")):
        table = views.counts_by(tiny.data, by).set_index(by)
        expected = pd.crosstab(meta[column], meta["split"])
        for value in expected.index:
            for split in ("train", "val", "test"):
                assert table.loc[value, split] == expected.loc[value, split]
            assert table.loc[value, "total"] == expected.loc[value].sum()
    with pytest.raises(ValueError, match="unknown column 'nope'"):
        views.counts_by(tiny.data, "nope")


def test_issues_frame_names_line_column_and_value(broken_data):
    frame = views.issues_frame(validate_dataset(broken_data))
    row = frame[frame["column"] == "split"].iloc[0]
    assert row["line"] == 3 and row["value"] == "training" and row["file"] == "metadata.csv"


def test_sample_ids_are_of_their_class_and_split(tiny):
    for name, ids in views.sample_ids(tiny.data, "val", per_class=5).items():
        assert len(ids) == 5
        assert all(tiny.data.class_names[tiny.data.labels[i]] == name and tiny.data.split[i] == "val" for i in ids)


def test_metrics_headline_and_per_group(tiny):
    m = tiny.analysis.read_json("metrics")
    head = views.metrics_headline(m).set_index("metric")
    assert head.loc["worst-group accuracy", "test"] == min(m["test"]["per_group"].values())
    assert head.loc["average accuracy", "val"] == m["val"]["acc"]
    groups = views.per_group_accuracy({"erm": m, "d3m": tiny.d3m.read_json("metrics")})
    assert len(groups) == 2 * tiny.data.n_groups
    assert groups["examples"].sum() == 2 * len(tiny.data.idx("test"))


def test_thumbnail_uri_is_a_png_of_the_image(tiny):
    uri = views.thumbnail_uri(tiny.data.images[0], size=64)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert img.shape == (64, 64, 3)
    assert np.array_equal(img[::2, ::2], tiny.data.images[0])  # 32 -> 64 nearest: every pixel doubled


def test_analyses_for_matches_dataset_and_group_attribute(tiny):
    assert views.analyses_for(tiny.store, tiny.data_root) == [tiny.analysis]
    assert views.analyses_for(tiny.store, tiny.data_root, "place") == []
    assert views.analyses_for(tiny.store, tiny.data_root / "elsewhere") == []
    assert views.active_analyses(tiny.store, tiny.data_root) == []
    assert "T=2" in views.analysis_label(tiny.analysis)


def test_analysis_config_takes_the_settings(tiny):
    cfg = analysis_config(tiny.data_root, "place", n_models=3, epochs=4, image_size=16, proj_dim=512)
    assert (cfg.trak.n_models, cfg.train.epochs, cfg.data.image_size, cfg.trak.proj_dim) == (3, 4, 16, 512)
    assert cfg.data.group_attribute == "place" and cfg.data.root == str(tiny.data_root.resolve())


def test_job_progress(tiny):
    status = tiny.analysis.status()
    info = views.job_progress(tiny.analysis, status)
    assert info["state"] == "done" and info["percent"] == 100.0 and not info["active"]
    started = datetime.fromisoformat(status["started_at"])
    running = dict(status, state="running", fraction=0.25, finished_at=None, stage="ERM epoch 1")
    info = views.job_progress(tiny.analysis, running, now=started + timedelta(seconds=75))
    assert (info["percent"], info["elapsed_s"], info["active"]) == (25.0, 75.0, True)
    assert views.format_seconds(75) == "1 min 15 s" and views.format_seconds(9.6) == "10 s"


def test_heatmap_cell_is_the_mean_alignment_of_its_examples(tiny):
    subpop = pd.read_csv(tiny.analysis.file("subpopulations.csv"), dtype={"value": str})
    align = tiny.analysis.read_array("alignment")
    train_ids = tiny.analysis.read_array("train_ids")
    hm = vs.heatmap(subpop, "place", low_count=50)
    for value in hm["mean"].index:
        for cls in hm["mean"].columns:
            ids = vs.cell_ids(tiny.data, train_ids, {"attribute": "place", "value": value, "class": cls})
            assert hm["count"].loc[value, cls] == len(ids)
            assert hm["low"].loc[value, cls] == (len(ids) < 50)
            if len(ids):
                assert hm["mean"].loc[value, cls] == pytest.approx(align[np.searchsorted(train_ids, ids)].mean())
    with pytest.raises(ValueError, match="no subpopulations"):
        vs.heatmap(subpop, "nope")


def test_class_extremes(tiny):
    a = tiny.analysis
    val_ids, proj, groups = a.read_array("val_ids"), a.read_array("auto_projection"), a.read_array("auto_groups")
    logits = a.read_array("erm_logits_val")
    ex = vs.class_extremes(tiny.data, val_ids, proj, groups, logits, vs.pseudo_group_names(a), 1, n=3)
    mask = (tiny.data.labels[val_ids] == 1) & (groups == 2)
    low = ex["poles"]["low"]
    assert low["count"] == mask.sum() and len(ex["frame"]) == (tiny.data.labels[val_ids] == 1).sum()
    assert low["accuracy"] == pytest.approx((logits[mask].argmax(1) == 1).mean())
    assert list(low["ids"]) == list(val_ids[mask][np.argsort(proj[mask])[:3]])
    high = ex["poles"]["high"]
    assert proj[np.searchsorted(val_ids, high["ids"][0])] == proj[(tiny.data.labels[val_ids] == 1)].max()
    assert sum(low["make_up"].values()) == low["count"]


def test_pseudo_group_rename_persists(fresh_choices):
    a = fresh_choices.analysis
    default = a.read_json("auto")["names"]
    assert annotations.rename_pseudo_group(a, 0, "  dark landbirds ") == {"0": "dark landbirds"}
    assert vs.pseudo_group_names(a) == ["dark landbirds", *default[1:]]
    with pytest.raises(ValueError, match="pseudo-group 0: the new name is empty"):
        annotations.rename_pseudo_group(a, 0, "  ")
    with pytest.raises(ValueError, match="'dark landbirds' is already the name of pseudo-group 0"):
        annotations.rename_pseudo_groups(a, {1: "dark landbirds"})
    assert vs.pseudo_group_names(a) == ["dark landbirds", *default[1:]]  # a refused rename changes nothing
    annotations.rename_pseudo_groups(a, {0: default[1], 1: default[0]})  # a swap in one save is fine
    assert vs.pseudo_group_names(a)[:2] == [default[1], default[0]]
    annotations.reset_pseudo_group_names(a, [0, 1])
    assert vs.pseudo_group_names(a) == default


def test_train_table_filter_sort_page(tiny):
    align = tiny.analysis.read_array("alignment")
    table = vs.train_table(tiny.data, tiny.analysis.read_array("train_ids"), align)
    assert len(table) == len(align) and (table["alignment"].to_numpy() == align).all()
    # percentile: the share of the other training examples with a lower A_i (no ties in A_i here)
    lower = (align[None, :] < align[:, None]).sum(axis=1)
    assert np.allclose(table["percentile"].to_numpy(), 100 * lower / (len(align) - 1))
    water = vs.filter_examples(table, ["waterbird"], {"place": ["land"]}, (0.0, 25.0))
    quarter = lower <= 0.25 * (len(align) - 1)
    expected = (table["class"] == "waterbird") & (table["place"] == "land") & quarter
    assert list(water["id"]) == list(table["id"][expected]) and len(water) > 0
    page2 = vs.sorted_page(table, "alignment", True, 2, 10)
    assert list(page2["id"]) == list(table.sort_values("alignment", kind="stable")["id"].iloc[10:20])
    mask = vs.filter_mask(table, ["waterbird"])
    order = vs.sort_order(table, "group", False)
    page1 = vs.sorted_page(table, "group", False, 1, 30, order, mask)
    raw = table[table["class"] == "waterbird"].sort_values(["group", "id"], ascending=[False, True], kind="stable")
    assert list(page1["id"]) == list(raw["id"].iloc[:30])
    assert vs.n_pages(len(table), 10) == -(-len(table) // 10)
    with pytest.raises(ValueError, match="page 99"):
        vs.sorted_page(table, "alignment", True, 99, 100)
    summary = vs.alignment_summary(align)
    assert summary["negative"] == (align < 0).sum() == tiny.d3m.read_json("metrics")["info"]["default_k"]


def test_flagged_and_excluded_sets_persist(fresh_choices):
    a = fresh_choices.analysis
    assert annotations.update_id_set(a, "flagged", add=[5, 3, 5]) == [3, 5]
    assert annotations.update_id_set(a, "flagged", add=[7], remove=[3]) == [5, 7]
    assert views.persisted(a, "flagged", []) == [5, 7]
    assert vs.ids_from_points([{"customdata": [7]}, {"customdata": 2}, {"x": 1}]) == [2, 7]
    cell = {"attribute": "place", "value": "land", "class": "waterbird"}
    assert annotations.toggle_cell(a, cell, True) == [cell]
    assert annotations.toggle_cell(a, cell, True) == [cell]
    assert annotations.toggle_cell(a, cell, False) == []


def test_method_choices_and_params():
    choices = {c["name"]: c for c in vr.method_choices(METHODS, flagged=[], cells=[])}
    assert set(choices) == set(METHODS)
    assert choices["d3m"]["needs"] == "k" and choices["erm"]["needs"] == "seed"
    assert not choices["flagged"]["available"] and not choices["subpopulations"]["available"]
    assert vr.debias_params(choices["d3m"], 1, k=30) == {"seed": 1, "k": 30}
    assert vr.debias_params(choices["auto_d3m"], 0, k=30, k_sweep=[10, 20]) == {"seed": 0, "k_sweep": [10, 20]}
    assert vr.debias_params(choices["random"], 0, k=30, k_sweep=[10]) == {"seed": 0, "k": 30}
    ready = {c["name"]: c for c in vr.method_choices(METHODS, [4, 9], [{"attribute": "a", "value": "b", "class": "c"}])}
    assert ready["flagged"]["available"] and vr.debias_params(ready["flagged"], 2, flagged=[4, 9]) == {"seed": 2, "ids": [4, 9]}
    assert parse_k_sweep(" 100, 20;50,") == [20, 50, 100]
    with pytest.raises(ValueError, match="'2x'"):
        parse_k_sweep("10, 2x")


def test_compare_table_and_charts(tiny):
    table = vr.compare_table(tiny.store, tiny.analysis.id, METHODS)
    rows = table.set_index("run")
    assert rows.loc[tiny.analysis.id, "method"] == "ERM (analysis)"
    d3m = tiny.d3m.read_json("metrics")
    assert rows.loc[tiny.d3m.id, "test_wga"] == d3m["test"]["wga"]
    assert rows.loc[tiny.d3m.id, "n_removed"] == rows.loc[tiny.control.id, "n_removed"] == d3m["n_removed"]
    assert rows.loc[tiny.control.id, "control_of"] == tiny.d3m.id
    points, erm = vr.wga_vs_k(table)
    assert erm == tiny.analysis.read_json("metrics")["test"]["wga"] and len(points) == 2
    names = vr.run_names(table)
    assert names[0] == "ERM" and f"k={d3m['n_removed']}" in names[1]


def test_jaccard_matrix(tiny):
    m = vr.jaccard_matrix([tiny.d3m, tiny.control])
    a, b = set(tiny.d3m.read_array("removed_ids").tolist()), set(tiny.control.read_array("removed_ids").tolist())
    assert m.loc[tiny.d3m.id, tiny.d3m.id] == 1.0
    assert m.loc[tiny.d3m.id, tiny.control.id] == pytest.approx(len(a & b) / len(a | b))


def test_metrics_long_and_result_table(tiny):
    m = tiny.d3m.read_json("metrics")
    long = vr.metrics_long(m)
    wga = long[(long["split"] == "test") & (long["metric"] == "wga")]["value"].iloc[0]
    assert wga == m["test"]["wga"]
    assert len(long[long["metric"].str.startswith("accuracy: ")]) == 2 * len(m["test"]["per_group"])
    result = vr.result_table(pipeline_summary(tiny.store, tiny.d3m), "D3M").set_index("model")
    assert result.loc["ERM", "test_wga"] == tiny.analysis.read_json("metrics")["test"]["wga"]
    assert result.loc["D3M", "test_wga"] == tiny.d3m.read_json("metrics")["test"]["wga"]
    assert result.loc["D3M", "test_wga_change"] == result.loc["D3M", "test_wga"] - result.loc["ERM", "test_wga"]
    assert result.loc["ERM", "test_wga_change"] == 0
    assert result.loc["random control", "test_acc"] == tiny.control.read_json("metrics")["test"]["acc"]
    assert vr.latest_result(tiny.store, tiny.analysis.id) == tiny.d3m
    assert vr.sweep_curves(tiny.store, tiny.analysis.id).empty
    choices = {c["name"]: c for c in vr.method_choices(METHODS, [], [])}
    assert choices["auto_d3m"]["alignment"] == "auto_alignment" and choices["d3m"]["alignment"] == "alignment"
    assert choices["random"]["control"] and not choices["d3m"]["control"]


def test_histogram_counts_every_value_once_per_colour(tiny):
    align = tiny.analysis.read_array("alignment")
    classes = np.asarray(tiny.data.class_names)[tiny.data.labels[tiny.analysis.read_array("train_ids")]]
    h = distributions.histogram(align, classes, bins=7)
    assert h.groupby("colour")["count"].sum().to_dict() == pd.Series(classes).value_counts().to_dict()
    assert h["left"].min() == align.min() and h["right"].max() == align.max()
    first = h[(h["colour"] == classes[0]) & (h["left"] == h["left"].min())]["count"].iloc[0]
    assert first == ((classes == classes[0]) & (align < h["right"].min())).sum()


def check_influential_examples(data, analysis) -> None:
    """One validation example's most influential training examples are its row's extremes."""
    val_ids, train_ids = analysis.read_array("val_ids"), analysis.read_array("train_ids")
    row = dense_scores(analysis)[7]  # rebuilt from the stored factors by the test
    table = vs.influential_examples(data, analysis, int(val_ids[7]), n=5)
    assert list(table.effect) == ["helps"] * 5 + ["hurts"] * 5
    assert list(table.id) == list(train_ids[np.argsort(-row)[:5]]) + list(train_ids[np.argsort(row)[:5]])
    np.testing.assert_allclose(table.influence, np.r_[np.sort(row)[::-1][:5], np.sort(row)[:5]],
                               rtol=1e-6, atol=1e-9 * np.abs(row).max())
    assert set(table.columns) >= {"id", "influence", "class", "group", "place"}
    with pytest.raises(ValueError, match=f"example {int(train_ids[0])} is not a validation example"):
        vs.influential_examples(data, analysis, int(train_ids[0]))


def test_influential_examples_are_the_extremes_of_the_validation_example_row(tiny):
    check_influential_examples(tiny.data, tiny.analysis)
