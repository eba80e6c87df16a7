"""kill -9 of real job processes at several stages: the run shows failed within seconds, the
same call resumes it in its folder from the last finished stage, and the result equals an
uninterrupted run's (same scores, metrics, removed ids)."""
from __future__ import annotations

import os
import shutil
import signal
import time

import numpy as np
import pytest

from tests.conftest import tiny_config
from core.runs import jobs, stages
from core.pipeline.analysis import start_analysis
from core.pipeline.debias import TARGET as DEBIAS, create_debias_run, start_debias
from core.runs.store import Run, RunStore
from tests.dense import dense_scores


def kill_when(run: Run, predicate, timeout: float = 300.0) -> dict:
    """SIGKILL the job's process group as soon as its status matches; the status seen."""
    deadline = time.monotonic() + timeout
    while True:
        status = run.status()
        if predicate(status) and status.get("pid"):
            os.killpg(status["pid"], signal.SIGKILL)
            return status
        assert jobs.is_active(status), f"job ended before the kill: {status}"
        assert time.monotonic() < deadline, status
        time.sleep(0.01)


def failed_within(run: Run, seconds: float = 5.0) -> dict:
    deadline = time.monotonic() + seconds
    while jobs.is_active(status := run.status()):
        assert time.monotonic() < deadline, f"still {status['state']} {seconds} s after kill -9"
        time.sleep(0.05)
    assert status["state"] == "failed" and "job process died" in status["error"], status
    return status


def same_metrics(a: dict, b: dict) -> None:
    for split in ("val", "test"):
        assert a[split] == b[split]


def test_killed_analysis_resumes_to_the_uninterrupted_result(tiny_sample, tiny_analysis, tmp_path):
    store = RunStore(tmp_path / "work")
    cfg = tiny_config(tiny_sample)
    run = start_analysis(store, cfg)
    stages_killed = []
    for stage in ("ERM", "model 2/2: training", "scoring"):
        seen = kill_when(run, lambda s, stage=stage: stage in (s.get("stage") or ""))
        stages_killed.append(seen["stage"])
        failed_within(run)
        again = start_analysis(store, cfg)  # the same call resumes the dead run in its folder
        assert again.id == run.id and len(store.list("analysis")) == 1
    # what the kills left finished is reused, never redone
    assert stages.is_done(run, "erm") and stages.is_done(run, "member_0")
    assert jobs.wait(run, timeout=300)["state"] == "done"
    assert run.status()["resumed"] == 3
    np.testing.assert_array_equal(dense_scores(run), dense_scores(tiny_analysis))
    np.testing.assert_array_equal(run.read_array("alignment"), tiny_analysis.read_array("alignment"))
    same_metrics(run.read_json("metrics"), tiny_analysis.read_json("metrics"))
    assert not list(run.path.rglob("*.tmp")), "a partly written file was left behind"

    # a debias run killed while retraining, then while training its random control
    params = {"k": 5, "seed": 0}
    ref = create_debias_run(RunStore(tiny_analysis.path.parents[1]), tiny_analysis.id, "d3m", params)
    jobs.run_inline(ref, DEBIAS)
    job = start_debias(store, run.id, "d3m", params)
    kill_when(job, lambda s: "retrained model" in (s.get("stage") or ""))
    failed_within(job)
    assert start_debias(store, run.id, "d3m", params).id == job.id
    kill_when(job, lambda s: (s.get("stage") or "").startswith("random control"))
    failed_within(job)
    jobs.resume(job, inline=True)
    assert job.status()["state"] == "done"
    np.testing.assert_array_equal(job.read_array("removed_ids"), ref.read_array("removed_ids"))
    same_metrics(job.read_json("metrics"), ref.read_json("metrics"))
    controls = [r for r in store.list("debias") if r.config().get("control_of") == job.id]
    assert len(controls) == 1 and controls[0].status()["state"] == "done"  # resumed, not doubled


def test_resume_refuses_a_run_that_is_not_failed(tiny_analysis):
    with pytest.raises(ValueError, match=f"run {tiny_analysis.id} is done: only a failed or cancelled"):
        jobs.resume(tiny_analysis)


@pytest.mark.parametrize("method", ["d3m", "auto_d3m"])
def test_killed_k_sweep_redoes_only_unfinished_retrains(tiny_analysis, tmp_path, method):
    """A debias job killed after two of four sweep retrains: resumed, it trains only the other
    two (and the control), keeps the first two as they were, and ends where an uninterrupted
    run ends."""
    from tests.spies import recorded_training

    params = {"k_sweep": [10, 20, 40, 80], "seed": 0}
    ref = create_debias_run(RunStore(tiny_analysis.path.parents[1]), tiny_analysis.id, method, params, control=False)
    jobs.run_inline(ref, DEBIAS)
    store = RunStore(tmp_path / "work")
    shutil.copytree(tiny_analysis.path, store.runs_dir / tiny_analysis.id)  # read-only fixture: a copy
    job = start_debias(store, tiny_analysis.id, method, params, control=False)
    kill_when(job, lambda s: "sweep 3/4" in (s.get("stage") or ""))
    failed_within(job)
    kept = {k: job.file(f"stages/sweep_k{k}.json").read_bytes() for k in (10, 20)}
    assert not stages.is_done(job, "sweep_k40")
    with recorded_training() as calls:
        jobs.resume(job, inline=True)
    assert job.status()["state"] == "done" and len(calls) == 2  # k = 40 and 80 only
    assert {k: job.file(f"stages/sweep_k{k}.json").read_bytes() for k in (10, 20)} == kept
    assert not job.file("sweep", create_parent=False).exists()  # the resume cache goes with the stage
    np.testing.assert_array_equal(job.read_array("removed_ids"), ref.read_array("removed_ids"))
    same_metrics(job.read_json("metrics"), ref.read_json("metrics"))
    assert job.read_json("metrics")["info"]["sweep"] == ref.read_json("metrics")["info"]["sweep"]
