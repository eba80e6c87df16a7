"""The Ablations page (AppTest): lists the study files, starts a study as a background job and
shows its table, bar chart and the link to a cell's runs; cancels a running study; a bad file
shows its error. The studies here reuse the tiny analysis and D3M run, so no Ray is started,
except in the cancel test, which stops the job while it starts."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.runs import jobs
from core.studies import study_runs as sr
from core.studies.spec import load_study
from tests.dashboard.fixtures import open_app

STUDY = """\
title = "{title}"
seeds = [0]
methods = ["d3m"]
control = true

[analysis]
data = "{data}"
epochs = 2
n_models = 2
proj_dim = 256
device = "cpu"
{extra}"""


@pytest.fixture
def studies(tmp_path, tiny) -> Path:
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "a_reused.toml").write_text(STUDY.format(title="Tiny reused", data=tiny.data_root, extra=""))
    (folder / "b_new.toml").write_text(STUDY.format(title="Tiny new", data=tiny.data_root,
                                                    extra='\n[grid]\n"d3m.beta" = [2.0]\n'))
    (folder / "c_broken.toml").write_text(STUDY.format(title="x", data=tiny.data_root, extra="widthh = 2\n"))
    return folder


def test_start_table_chart_and_link_to_compare(monkeypatch, tiny, tiny_copy, studies):
    monkeypatch.setenv("D3M_STUDIES", str(studies))
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "ablations")
    assert at.selectbox(key="study_file").options == ["Tiny reused (a_reused.toml)", "Tiny new (b_new.toml)",
                                                      "c_broken.toml"]
    assert any("1 cells x 1 seeds = 1 tasks" in c.value for c in at.caption)
    at.button(key="start_study").click().run()
    study = load_study(studies / "a_reused.toml")
    [run] = sr.runs_of(tiny_copy, study)
    assert jobs.wait(run, timeout=120)["state"] == "done"
    at.run()
    assert not at.exception
    shown = next(d.value for d in at.dataframe if "test_wga %" in d.value.columns)
    wga = tiny.d3m.read_json("metrics")["test"]["wga"]
    assert shown["test_wga %"].tolist() == [f"{100 * wga:.1f}"]  # one seed: no ± part
    assert [c["reused"] for c in run.read_json("cells")] == [True]  # the D3M run of the fixture
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="study_metric").set_value("n_removed").run()
    assert f"Runs: `{tiny.d3m.id}`" in [c.value for c in at.caption]
    at.button(key="open_compare").click().run()
    assert at.session_state["analysis_id"] == tiny.analysis.id
    assert at.session_state["data_root"] == str(Path(tiny.data_root).resolve())
    assert at.title[0].value == "Compare runs"


def test_broken_study_shows_its_error(monkeypatch, tiny, tiny_copy, studies):
    monkeypatch.setenv("D3M_STUDIES", str(studies))
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "ablations")
    at.selectbox(key="study_file").set_value("c_broken.toml").run()
    assert at.error[0].value.startswith(f"{studies / 'c_broken.toml'}:12: widthh: unknown analysis setting")
    assert "start_study" not in [b.key for b in at.button]


def test_running_study_can_be_cancelled(monkeypatch, tiny, tiny_copy, studies):
    monkeypatch.setenv("D3M_STUDIES", str(studies))
    at = open_app(monkeypatch, tiny.data_root, tiny_copy.workdir, "ablations")
    at.selectbox(key="study_file").set_value("b_new.toml").run()
    at.button(key="start_study").click().run()
    [run] = sr.runs_of(tiny_copy, load_study(studies / "b_new.toml"))
    assert at.button(key=f"cancel-{run.id}")  # the progress panel
    at.button(key=f"cancel-{run.id}").click().run()
    assert run.status()["state"] == "cancelled"
    assert at.button(key="start_study")  # can start again
