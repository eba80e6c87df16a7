"""A task's work folder on a node (core/studies/tasks.py): a removal cut short by a killed
worker must not leave a half-deleted folder that the next try of the task would resume."""
from __future__ import annotations

import shutil

import pytest

from core.studies import tasks


def make_run(store, run_id: str) -> None:
    (store.runs_dir / run_id).mkdir(parents=True)
    (store.runs_dir / run_id / "run.json").write_text("{}")
    (store.runs_dir / run_id / "metrics.json").write_text("{}")


def test_a_removal_cut_short_leaves_no_partial_task_folder(tmp_path, monkeypatch):
    real = shutil.rmtree

    def killed(path, ignore_errors=False):  # the worker dies after deleting one file
        next(path.rglob("run.json")).unlink()
        raise SystemExit("killed")

    with pytest.raises(SystemExit):
        with tasks.workspace("k1", None, str(tmp_path)) as store:
            make_run(store, "analysis-1")
            monkeypatch.setattr(tasks.shutil, "rmtree", killed)
    monkeypatch.setattr(tasks.shutil, "rmtree", real)
    assert not (tmp_path / "tasks" / "k1").exists()  # the next try starts clean
    with tasks.workspace("k1", None, str(tmp_path)) as store:
        assert store.list() == [] and not (store.runs_dir / "analysis-1").exists()
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == []  # leftovers swept


def test_a_finished_task_folder_is_removed_and_another_kept(tmp_path):
    with tasks.workspace("a", None, str(tmp_path)) as store:
        make_run(store, "analysis-1")
        with tasks.workspace("b", None, str(tmp_path)) as other:
            make_run(other, "analysis-2")
        assert (store.runs_dir / "analysis-1" / "run.json").is_file()
        assert not (tmp_path / "tasks" / "b").exists()
    assert list((tmp_path / "tasks").iterdir()) == []
