"""The pages: a dead job shows failed with a Resume button that resumes it in its folder;
D3M_DATA_ROOT refuses a path box that leaves the root."""
from __future__ import annotations

import subprocess

from core.runs import jobs
from core.pipeline.analysis import create_analysis_run
from core.runs.store import RunStore
from tests.conftest import tiny_config
from tests.dashboard.fixtures import open_app


def test_dead_analysis_shows_failed_and_resumes(monkeypatch, tiny, tmp_path):
    store = RunStore(tmp_path / "work")
    run = create_analysis_run(store, tiny_config(tiny.data_root, epochs=1))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the job "died"
    run.set_status(state="running", stage="ERM training", pid=gone.pid, target="analysis")
    at = open_app(monkeypatch, tiny.data_root, tmp_path / "work")
    assert any("job process died" in e.value and run.id in e.value for e in at.error)
    at.button(key=f"resume-{run.id}").click().run()
    status = run.status()
    assert status["resumed"] == 1 and jobs.is_active(status) and status["pid"] != gone.pid
    assert len(store.list("analysis")) == 1  # resumed in its folder, not a new run
    assert jobs.cancel(run)["state"] == "cancelled"


def test_data_root_confines_the_path_boxes(monkeypatch, tiny, tmp_path):
    monkeypatch.setenv("D3M_DATA_ROOT", str(tiny.data_root.parent))
    at = open_app(monkeypatch, tiny.data_root, tmp_path / "work")
    assert any(f"Work directory '{tmp_path / 'work'}' is outside" in e.value for e in at.error)
    at = open_app(monkeypatch, tiny.data_root, "work")  # relative: inside the root
    assert not any("outside" in e.value for e in at.error)
    at.text_input(key="data_root").set_value("../../etc").run()
    assert any("'..' is not allowed" in e.value for e in at.error)
