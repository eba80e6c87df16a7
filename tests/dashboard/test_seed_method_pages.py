"""PGD, FFW and BA-LoRA on the Debias page (settings, start, the data each trains on) and their
failure signatures on Compare."""
from __future__ import annotations

import pytest

from core.methods import METHODS, ba_lora, ffw_report, pgd_report
from core.runs import jobs
from core.views import runs as vr
from tests.dashboard.fixtures import open_app

SETTINGS = {  # method: (an option shown with its default, the value set, more options set)
    "pgd": (("selectbox", "norm", "l2", "l1"), {"q": 0.5}),
    "ffw": (("selectbox", "structure", "unstructured", "structured"),
            {"max_gate_epochs": 2, "epoch_steps": 2, "head_max_epochs": 5}),
    "ba_lora": (("number_input", "rank", 8, 4), {"steps": 5}),
}


@pytest.mark.parametrize("method", list(SETTINGS))
def test_debias_page_runs_a_seed_method_with_its_settings(monkeypatch, tiny, tiny_copy, method):
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "debias")
    at.radio(key="debias_method").set_value(method).run()
    trains_on = {"pgd": "the training split", "ffw": "group-balanced 60% of validation",
                 "ba_lora": "group-balanced 60% of validation"}[method]
    assert any(trains_on in c.value for c in at.caption), [c.value for c in at.caption]
    (kind, name, default, value), more = SETTINGS[method]
    widget = getattr(at, kind)(key=f"option_{method}_{name}")
    assert widget.value == default
    widget.set_value(value).run()
    for other, v in more.items():
        at.number_input(key=f"option_{method}_{other}").set_value(v).run()
    at.button(key="debias_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (run,) = [r for r in tiny_copy.list("debias") if r.config()["method"] == method]
    params = run.config()["params"]
    assert params[name] == value and all(params[k] == v for k, v in more.items())
    assert jobs.wait(run, timeout=300)["state"] == "done", run.status()
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "compare")
    runs = at.dataframe[0].value.set_index("run")  # every run's macro-F1 beside its accuracy
    assert runs.loc[run.id, "test_macro_f1"] == run.read_json("metrics")["test"]["macro_f1"]
    heading = {"pgd": "PGD: where the sampling mass went and its failure signature (validation)",
               "ffw": "FFW: pruning and its failure signatures (validation)",
               "ba_lora": "BA-LoRA: how far the adapted outputs moved from the base model (validation)"}
    headings = [h.value for h in at.subheader]
    assert heading[method] in headings
    shown = at.dataframe[1 + [h for h in headings if h in heading.values()].index(heading[method])].value
    info = run.read_json("metrics")["info"]
    assert run.id in list(shown["run"])
    row = shown.set_index("run").loc[run.id]
    if method == "ffw":
        expected = {r.title: rows for r, rows in vr.method_reports(tiny_copy, tiny.analysis.id, METHODS)}
        expected = expected[heading["ffw"]].set_index("run").loc[run.id]
        assert row["structure"] == "structured" and row["sparsity"] == info["sparsity"] == expected["sparsity"]
        assert row["failure signatures"] == (", ".join(ffw_report.signatures(info)) or "none")
    elif method == "pgd":
        assert row["sampling mass on them"] == info["conflicting_mass"]
        assert row["failure signatures"] == (", ".join(pgd_report.signatures(info)) or "none")
    else:
        assert row["predictions changed"] == info["predictions_changed_from_base"]
        assert row["failure signatures"] == (", ".join(ba_lora.signatures(info)) or "none")
