"""Run folders written before the package move (status.json naming a job by its old module
path, e.g. 'core.analysis:run_analysis') still resume in their folder and open in the pages;
an analysis made before the factored scores (a dense scores.npy) still opens and runs D3M and
Auto-D3M."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from core.attribution.factors import open_scores
from core.attribution.scores import DenseScores
from core.methods.selection import most_negative
from core.pipeline.debias import start_debias
from core.runs import jobs, names, stages
from core.runs.store import RunStore
from tests.dashboard.fixtures import open_app
from tests.dense import dense_scores


def as_written_before_the_move(run, old_target: str) -> None:
    """What a job that died before the move left: its old target, state failed."""
    run.set_status(state="failed", target=old_target, pid=None, error="job process died (pid 1, ...)")


def test_every_old_target_names_a_job_that_resolves():
    assert set(names.OLD_TARGETS.values()) <= set(names.JOBS)
    for old, name in names.OLD_TARGETS.items():
        assert names.canonical(old) == name
        assert callable(names.resolve(old)) and names.resolve(old) is names.resolve(name)


def test_an_old_analysis_folder_resumes_and_its_pages_open(tiny, tiny_copy, monkeypatch):
    store = tiny_copy
    (run,) = [r for r in store.list("analysis")]
    scores_before = dense_scores(run)
    stages.forget(run)  # as if it died before any marker; every artifact must be recomputed
    for name in ("ensemble/factors/gram_b.npy", "alignment.npy", "subpopulations.csv"):
        run.file(name).unlink()
    as_written_before_the_move(run, "core.analysis:run_analysis")

    jobs.resume(run)  # a real child process resolves the old target through the alias table
    final = jobs.wait(run, timeout=300)
    assert final["state"] == "done", final.get("error")
    assert final["target"] == "analysis" and final["resumed"] == 1
    np.testing.assert_array_equal(dense_scores(run), scores_before)
    for page in ("alignment", "subpopulations", "compare"):
        open_app(monkeypatch, tiny.data_root, store.workdir, page)


def as_made_before_the_factors(run) -> None:
    """What an analysis finished before issue 20 holds: scores.npy (validation x train) and its
    "scores" stage marker, no factor store."""
    open_scores(run.path).export(run.file("scores.npy"))
    shutil.rmtree(run.file("ensemble/factors"))
    run.file("stages/factors.json").rename(run.file("stages/scores.json"))


def test_an_analysis_with_a_dense_scores_file_still_opens_and_runs_its_methods(tiny, tiny_copy, monkeypatch):
    store = tiny_copy
    (run,) = store.list("analysis")
    dense = dense_scores(run)
    auto_alignment = np.array(run.read_array("auto_alignment"))
    as_made_before_the_factors(run)
    scores = open_scores(run.path)
    assert isinstance(scores, DenseScores) and not run.file("ensemble/factors", create_parent=False).exists()
    np.testing.assert_allclose(scores.to_dense(), dense, rtol=1e-6, atol=1e-7 * np.abs(dense).max())
    for page in ("alignment", "extremes", "subpopulations"):
        open_app(monkeypatch, tiny.data_root, store.workdir, page)
    d3m = start_debias(store, run.id, "d3m", {"seed": 0}, control=False, inline=True)
    np.testing.assert_array_equal(np.sort(d3m.read_array("removed_ids")), np.sort(tiny.d3m.read_array("removed_ids")))
    auto = start_debias(store, run.id, "auto_d3m", {"seed": 0}, control=False, inline=True)
    train_ids = run.read_array("train_ids")
    want = train_ids[most_negative(auto_alignment, int((auto_alignment < 0).sum()))]
    np.testing.assert_array_equal(np.sort(auto.read_array("removed_ids")), np.sort(want))


def test_an_old_debias_folder_resumes(tiny_copy):
    store = tiny_copy
    d3m = next(r for r in store.list("debias") if r.config()["method"] == "d3m")
    removed = np.array(d3m.read_array("removed_ids"))
    stages.forget(d3m)
    as_written_before_the_move(d3m, "core.debias:run_debias")
    assert jobs.wait(jobs.resume(d3m), timeout=300)["state"] == "done"
    np.testing.assert_array_equal(d3m.read_array("removed_ids"), removed)


@pytest.mark.parametrize("target", ["core.no_such_module:run", "analysis_v0"])
def test_an_unknown_stored_target_fails_in_one_line(tmp_path, target):
    run = RunStore(tmp_path).create("analysis", {})
    as_written_before_the_move(run, target)
    final = jobs.wait(jobs.resume(run), timeout=30)
    assert final["state"] == "failed" and target in final["error"]
