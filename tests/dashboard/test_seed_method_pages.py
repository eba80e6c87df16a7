"""PGD, FFW and BA-LoRA on the Debias page (settings, start) and FFW's signatures on Compare."""
from __future__ import annotations

import pytest

from core.runs import jobs

from core.methods import METHODS, ffw_report
from core.views import runs as vr
from tests.dashboard.fixtures import open_app

SETTINGS = {  # method: (an option shown with its default, the value set, more options set)
    "pgd": (("selectbox", "norm", "l2", "l1"), {"q": 0.5}),
    "ffw": (("selectbox", "structure", "unstructured", "structured"), {"gate_epochs": 1}),
    "ba_lora": (("number_input", "rank", 8, 4), {"steps": 5}),
}


@pytest.mark.parametrize("method", list(SETTINGS))
def test_debias_page_runs_a_seed_method_with_its_settings(monkeypatch, tiny, tiny_copy, method):
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "debias")
    at.radio(key="debias_method").set_value(method).run()
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
    if method == "ffw":
        at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "compare")
        runs = at.dataframe[0].value.set_index("run")  # every run's macro-F1 beside its accuracy
        assert runs.loc[run.id, "test_macro_f1"] == run.read_json("metrics")["test"]["macro_f1"]
        assert "FFW: pruning and its failure signatures (validation)" in [h.value for h in at.subheader]
        shown = at.dataframe[1].value
        [(_, expected)] = vr.method_reports(tiny_copy, tiny.analysis.id, METHODS)
        assert list(shown["run"]) == [run.id] and shown["structure"].iat[0] == "structured"
        info = run.read_json("metrics")["info"]
        assert shown["sparsity"].iat[0] == info["sparsity"] == expected["sparsity"].iat[0]
        assert shown["failure signatures"].iat[0] == (", ".join(ffw_report.signatures(info)) or "none")
