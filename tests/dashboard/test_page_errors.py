"""A page action given a bad value shows one line naming what is wrong (AppTest), never a
traceback, and changes nothing: deleting a running run, an empty or duplicate pseudo-group name."""
from __future__ import annotations

import subprocess

from core.views import selection as vs
from tests.dashboard.fixtures import open_app


def one_line_error(at) -> str:
    assert not at.exception, [e.message for e in at.exception]
    [error] = at.error
    assert "\n" not in error.value and "Traceback" not in error.value
    return error.value


def test_deleting_a_running_run_shows_one_line(monkeypatch, tiny, tiny_copy):
    store = tiny_copy
    run = next(r for r in store.list("debias") if r.config()["method"] == "d3m")
    job = subprocess.Popen(["sleep", "120"])  # a live process stands for the run's job
    try:
        run.set_status(state="running", pid=job.pid)
        at = open_app(monkeypatch, tiny.data_root, store.workdir, "compare")
        at.selectbox(key="compare_export_run").set_value(run.id).run()
        at.checkbox(key=f"delete_sure_{run.id}").check().run()
        at.button(key="delete_run").click().run()
        assert one_line_error(at) == f"run {run.id!r} is running (pid {job.pid}); cancel it first"
        assert store.get(run.id).status()["state"] == "running"  # still there
    finally:
        job.kill()
        job.wait()


def test_deleting_a_finished_run_removes_it(monkeypatch, tiny, tiny_copy):
    store = tiny_copy
    run = next(r for r in store.list("debias") if r.config().get("control_of"))
    at = open_app(monkeypatch, tiny.data_root, store.workdir, "compare")
    at.selectbox(key="compare_export_run").set_value(run.id).run()
    at.checkbox(key=f"delete_sure_{run.id}").check().run()
    at.button(key="delete_run").click().run()
    assert not at.exception and not at.error
    assert run.id not in [r.id for r in store.list()]
    assert run.id not in at.dataframe[0].value["run"].tolist()  # the cached table saw the change


def test_an_empty_or_duplicate_pseudo_group_name_shows_one_line(monkeypatch, fresh_choices):
    a = fresh_choices.analysis
    before = vs.pseudo_group_names(a)
    at = open_app(monkeypatch, fresh_choices.data_root, fresh_choices.workdir, "extremes")
    low, high = [t for t in at.text_input if t.key.startswith(f"name_{a.id}_")]
    low.input("   ")
    at.button[0].click().run()  # the form's "Save names"
    g = int(low.key.rsplit("_", 1)[1])
    assert one_line_error(at) == (f"pseudo-group {g}: the new name is empty; type a name, or reset to the "
                                  f"default ({before[g]!r})")
    assert vs.pseudo_group_names(a) == before
    low, high = [t for t in at.text_input if t.key.startswith(f"name_{a.id}_")]
    low.input(high.value)
    at.button[0].click().run()
    assert "is already the name of pseudo-group" in one_line_error(at)
    assert vs.pseudo_group_names(a) == before
