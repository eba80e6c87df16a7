"""Every page through streamlit's AppTest on the tiny analysed sample: it renders, its widgets
change what it shows, and bad input shows an error."""
from __future__ import annotations

import shutil

import pandas as pd

from core.runs import jobs

from core.views import data as views, selection as vs
from core.pipeline.analysis import create_analysis_run
from core.config import analysis_config
from core.methods import METHODS
from core.runs.store import RunStore
from dashboard.widgets import pct
from tests.dashboard.fixtures import open_app


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def frame_starting_with(at, column: str) -> pd.DataFrame:
    """The shown table whose first column is `column`."""
    return next(d.value for d in at.dataframe if list(d.value.columns)[0] == column)


def test_data_page_counts_and_erm(monkeypatch, tiny):
    at = open_app(monkeypatch, tiny.data_root, tiny.workdir)
    shown = metrics(at)
    for split in ("train", "val", "test"):
        assert shown[f"{split} examples"] == f"{len(tiny.data.idx(split)):,}"
    test = tiny.analysis.read_json("metrics")["test"]
    assert shown["Test worst-group accuracy"] == pct(test["wga"])
    assert any(test["worst_group"] in c.value for c in at.caption)
    head = frame_starting_with(at, "metric").set_index("metric")
    assert head.loc["worst-group accuracy", "test"] == test["wga"]
    assert frame_starting_with(at, "class")["total"].sum() == len(tiny.data.split)
    at.selectbox(key="count_by").select("place").run()
    counts = frame_starting_with(at, "place")
    assert counts["total"].sum() == len(tiny.data.split)
    assert at.selectbox(key="analysis_id").value == tiny.analysis.id


def test_unknown_folder_shows_the_error(monkeypatch, tiny, tmp_path):
    at = open_app(monkeypatch, tmp_path / "nowhere", tmp_path / "work")
    assert any("cannot be used" in e.value for e in at.error)
    assert "does not exist" in at.dataframe[0].value["problem"].iloc[0]
    at.switch_page("dashboard/pages/alignment.py").run()
    assert any("problems" in e.value for e in at.error) and not at.exception


def test_invalid_metadata_shows_file_line_and_value(monkeypatch, broken_data, tmp_path):
    at = open_app(monkeypatch, broken_data, tmp_path / "work")
    problems = at.dataframe[0].value
    row = problems[problems["column"] == "split"].iloc[0]
    assert row["line"] == 3 and row["value"] == "training"


def test_fresh_workdir_start_and_cancel(monkeypatch, tiny, tmp_path):
    at = open_app(monkeypatch, tiny.data_root, tmp_path / "work", "extremes")
    assert any("No analysis" in i.value for i in at.info)
    at.number_input(key="set_models").set_value(2)
    at.number_input(key="set_epochs").set_value(1)
    at.number_input(key="set_proj_dim").set_value(256)
    at.button(key="start_analysis").click().run()
    store = RunStore(tmp_path / "work")
    [run] = store.list("analysis")
    assert run.config()["trak"]["n_models"] == 2 and run.config()["train"]["epochs"] == 1
    assert jobs.is_active(jobs.refresh(run))
    assert at.button(key=f"cancel-{run.id}")  # the progress panel
    at.button(key=f"cancel-{run.id}").click().run()
    assert run.status()["state"] == "cancelled"
    assert any("cancelled" in w.value for w in at.warning)
    assert at.button(key="start_analysis")  # can start again


def test_extremes_page(monkeypatch, fresh_choices):
    tiny = fresh_choices
    a = tiny.analysis
    at = open_app(monkeypatch, tiny.data_root, tiny.workdir, "extremes")
    args = (tiny.data, a.read_array("val_ids"), a.read_array("auto_projection"), a.read_array("auto_groups"),
            a.read_array("erm_logits_val"), vs.pseudo_group_names(a))
    for cls, name in enumerate(tiny.data.class_names):
        at.selectbox(key="extremes_class").select(name).run()
        ex = vs.class_extremes(*args, cls)
        assert [s.value for s in at.subheader][:2] == [ex["poles"]["low"]["name"], ex["poles"]["high"]["name"]]
        accs = [m.value for m in at.metric if m.label == "ERM accuracy on this side"]
        assert accs == [pct(ex["poles"]["low"]["accuracy"]), pct(ex["poles"]["high"]["accuracy"])]
    last = len(tiny.data.class_names) - 1
    at.text_input(key=f"name_{a.id}_{2 * last}").input("hard cases")
    at.button[0].click().run()  # the form's "Save names"
    assert vs.pseudo_group_names(a)[2 * last] == "hard cases"
    assert at.subheader[0].value == "hard cases"


def test_alignment_page_scores_filters_and_flags(monkeypatch, fresh_choices):
    tiny = fresh_choices
    at = open_app(monkeypatch, tiny.data_root, tiny.workdir, "alignment")
    align, auto = tiny.analysis.read_array("alignment"), tiny.analysis.read_array("auto_alignment")
    assert metrics(at)["A_i < 0"] == f"{(align < 0).sum():,}"
    at.radio(key="align_score").set_value("auto_alignment").run()
    assert metrics(at)["A_i < 0"] == f"{(auto < 0).sum():,}"
    at.radio(key="align_score").set_value("alignment").run()
    at.multiselect(key="align_classes").select("waterbird").run()
    at.selectbox(key="align_attr").select("place").run()
    at.multiselect(key="align_values_place").select("land").run()
    table = at.dataframe[0].value
    assert set(table["class"]) == {"waterbird"} and set(table["place"]) == {"land"}
    assert table["image"].str.startswith("data:image/png;base64,").all()
    assert list(table["alignment"]) == sorted(table["alignment"])
    train_ids = tiny.analysis.read_array("train_ids")
    meta = tiny.data.metadata.iloc[train_ids]
    expected = train_ids[(meta["place"] == "land").to_numpy() & (tiny.data.labels[train_ids] == 1)]
    at.button(key="flag_all").click().run()
    assert views.persisted(tiny.analysis, "flagged", []) == sorted(expected.tolist())
    assert metrics(at)["flagged for removal"] == str(len(expected))
    at.button(key="flag_clear").click().run()
    assert views.persisted(tiny.analysis, "flagged", None) == []


def test_subpopulations_page_cells_and_exclusion(monkeypatch, fresh_choices):
    tiny = fresh_choices
    at = open_app(monkeypatch, tiny.data_root, tiny.workdir, "subpopulations")
    at.selectbox(key="sub_attr").select("source").run()
    options = at.selectbox(key="sub_cell_source").options
    assert options and all(" with source = " in o for o in options)
    subpop = pd.read_csv(tiny.analysis.file("subpopulations.csv"), dtype={"value": str})
    crowd = subpop[(subpop["attribute"] == "source") & (subpop["value"] == "crowd")].iloc[0]
    cell = {"attribute": "source", "value": "crowd", "class": crowd["class"]}
    at.selectbox(key="sub_cell_source").select(vs.cell_key(cell)).run()
    assert metrics(at)["training examples in the cell"] == f"{crowd['count']:,}"
    assert metrics(at)["mean A_i"] == f"{crowd['mean_alignment']:.3e}"
    at.toggle(key=f"sub_exclude_{vs.cell_key(cell)}").set_value(True).run()
    assert views.persisted(tiny.analysis, "excluded_cells", []) == [cell]
    assert at.main.subheader[-1].value == "Excluded subpopulations (1)"


def test_debias_page_methods_k_and_retrain(monkeypatch, tiny, tiny_copy):
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "debias")
    assert at.radio(key="debias_method").options == [f"{m.title}  ·  group labels train/val: {m.group_info}"
                                                     for m in METHODS.values()]
    align = tiny.analysis.read_array("alignment")
    assert at.slider(key="debias_k_d3m").value == (align < 0).sum()
    assert at.dataframe[0].value.set_index("model").loc["ERM", "test_wga"] == \
        tiny.analysis.read_json("metrics")["test"]["wga"]
    at.radio(key="debias_method").set_value("flagged").run()
    assert at.button(key="debias_start").disabled and "flag examples" in at.warning[0].value
    at.radio(key="debias_method").set_value("random").run()
    at.slider(key="debias_k_random").set_value(7).run()
    at.button(key="debias_start").click().run()
    analysis = tiny_copy.get(tiny.analysis.id)
    new = [r for r in tiny_copy.list("debias") if r.config()["method"] == "random" and not r.config()["control_of"]]
    assert len(new) == 1 and new[0].config()["params"] == {"seed": 0, "k": 7}
    assert jobs.wait(new[0], timeout=120)["state"] == "done", new[0].status()
    at.run()
    assert at.subheader[0].value.startswith("Latest result: Random removal (control), 7 examples removed")
    assert analysis.id == new[0].parent


def test_debias_page_method_settings(monkeypatch, tiny, tiny_copy):
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "debias")
    at.radio(key="debias_method").set_value("dfr").run()
    assert at.text_input(key="option_dfr_c_grid").value == "1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01"
    at.text_input(key="option_dfr_c_grid").set_value("1, x").run()
    assert "dfr parameter c_grid='1, x' is not a comma-separated list of numbers" in at.error[0].value
    assert at.button(key="debias_start").disabled  # refused as typed: no run can start
    assert not [r for r in tiny_copy.list("debias") if r.config()["method"] == "dfr"]
    at.text_input(key="option_dfr_c_grid").set_value("1, 0.1").run()
    at.number_input(key="option_dfr_n_draws").set_value(1).run()
    at.button(key="debias_start").click().run()
    (run,) = [r for r in tiny_copy.list("debias") if r.config()["method"] == "dfr"]
    assert run.config()["params"] == {"seed": 0, "penalty": "l1", "c_grid": [1.0, 0.1], "n_draws": 1}
    assert jobs.wait(run, timeout=120)["state"] == "done", run.status()
    assert [row["C"] for row in run.read_json("metrics")["info"]["c_sweep"]] == [1.0, 0.1]


def test_compare_page_table_and_delete(monkeypatch, tiny, tiny_copy):
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "compare")
    table = at.dataframe[0].value
    assert list(table["run"]) == [tiny.analysis.id, tiny.d3m.id, tiny.control.id]
    assert table.set_index("run").loc[tiny.d3m.id, "test_wga"] == tiny.d3m.read_json("metrics")["test"]["wga"]
    assert at.multiselect(key="compare_runs").value == [tiny.analysis.id, tiny.d3m.id, tiny.control.id]
    at.selectbox(key="compare_export_run").select(tiny.control.id).run()
    assert at.button(key="delete_run").disabled
    at.checkbox(key=f"delete_sure_{tiny.control.id}").check().run()
    at.button(key="delete_run").click().run()
    assert [r.id for r in tiny_copy.list()] == [tiny.analysis.id, tiny.d3m.id]
    assert list(at.dataframe[0].value["run"]) == [tiny.analysis.id, tiny.d3m.id]


def test_failed_analysis_shows_the_error_and_the_log(monkeypatch, tiny, tmp_path):
    store = RunStore(tmp_path / "work")
    run = create_analysis_run(store, analysis_config(tiny.data_root))
    run.set_status(state="failed", error="ValueError: out of memory on model 2/5")
    at = open_app(monkeypatch, tiny.data_root, tmp_path / "work")
    [error] = [e.value for e in at.error]
    assert "ValueError: out of memory on model 2/5" in error and str(run.path / "log.txt") in error
    assert at.button(key="start_analysis")


def finished_copy(store: RunStore, old, root, test_wga: float, epochs: int):
    """A newer finished analysis of the same data: a copy of `old` with another test WGA."""
    new = create_analysis_run(store, analysis_config(root, n_models=2, epochs=epochs, proj_dim=256))
    for item in old.path.iterdir():
        if item.name not in ("run.json", "config.json", "status.json"):
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, new.path / item.name)
    changed = old.read_json("metrics")
    changed["test"] = dict(changed["test"], wga=test_wga)
    new.write_json("metrics", changed)
    new.set_status(state="done")
    return new


def test_newest_analysis_is_shown_and_another_can_be_chosen(monkeypatch, tiny, tiny_copy):
    """A newer analysis of the dataset is shown first; one finishing later is switched to."""
    old = tiny_copy.get(tiny.analysis.id)
    new = finished_copy(tiny_copy, old, tiny.data_root, 0.625, epochs=2)
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir)
    assert at.selectbox(key="analysis_id").options == [views.analysis_label(new), views.analysis_label(old)]
    assert metrics(at)["Test worst-group accuracy"] == "62.5%"
    at.selectbox(key="analysis_id").set_value(old.id).run()
    assert metrics(at)["Test worst-group accuracy"] == pct(old.read_json("metrics")["test"]["wga"])
    at.run()  # the user's choice stays while nothing new finished
    assert at.selectbox(key="analysis_id").value == old.id
    newest = finished_copy(tiny_copy, old, tiny.data_root, 0.375, epochs=3)
    at.run()
    assert at.selectbox(key="analysis_id").value == newest.id and metrics(at)["Test worst-group accuracy"] == "37.5%"
