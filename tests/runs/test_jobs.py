import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from core.runs import jobs
from core.runs.process import pid_alive
from core.runs.store import RunStore

T = "tests.job_targets"


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "work")


def wait_until(run, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate(status := jobs.refresh(run)):
        assert time.monotonic() < deadline, f"timed out; status {status}"
        time.sleep(0.02)
    return status


def test_job_runs_in_another_process(store):
    run = store.create("count", {"n": 5, "delay": 0.15})
    pid = jobs.start(run, f"{T}:count")
    assert pid != os.getpid()
    seen = []
    status = jobs.wait(run, on_status=seen.append, poll=0.02, timeout=20)
    assert status["state"] == "done", status
    assert status["pid"] == pid and status["fraction"] == 1.0
    assert (status["stage"], status["done"], status["total"]) == ("counting", 5, 5)
    assert status["started_at"] <= status["finished_at"]
    assert any(s["state"] == "running" and 0 < s["done"] < 5 for s in seen), seen
    assert run.read_json("result") == {"total": 15, "pid": pid}
    np.testing.assert_array_equal(run.read_array("squares"), [1, 4, 9, 16, 25])
    assert run.file("log.txt").exists()
    wait_until(run, lambda s: not pid_alive(pid))  # exited (an unreaped zombie counts as gone)


def test_failing_job_records_traceback(store):
    run = store.create("boom", {})
    jobs.start(run, f"{T}:boom")
    status = jobs.wait(run, poll=0.05, timeout=20)
    assert status["state"] == "failed"
    assert status["error"] == "ValueError: boom"
    assert "Traceback" in status["traceback"] and "boom" in status["traceback"]
    assert status["finished_at"] is not None
    assert "ValueError: boom" in run.file("log.txt").read_text()


def test_cancel_stops_job(store):
    run = store.create("sleepy", {})
    pid = jobs.start(run, f"{T}:sleepy")
    wait_until(run, lambda s: s["state"] == "running" and s["stage"] == "sleeping")
    with pytest.raises(TimeoutError):
        jobs.wait(run, poll=0.05, timeout=0.2)
    status = jobs.cancel(run)
    assert status["state"] == "cancelled" and status["finished_at"] is not None
    assert not pid_alive(pid)
    assert run.read_json("cleanup") == {"ran": True}  # SIGTERM let the job clean up
    assert jobs.cancel(run) == status  # already finished: nothing to do
    assert jobs.refresh(run)["state"] == "cancelled"


def test_killed_job_detected_as_failed(store):
    run = store.create("sleepy", {})
    pid = jobs.start(run, f"{T}:sleepy")
    wait_until(run, lambda s: s["state"] == "running")
    os.kill(pid, signal.SIGKILL)
    status = wait_until(run, lambda s: not jobs.is_active(s))
    assert status["state"] == "failed"
    assert status["error"].startswith(f"job process died (pid {pid}, killed by SIGKILL (signal 9)")
    assert not pid_alive(pid)


def test_dead_job_is_failed_for_every_reader(store, capsys):
    """A job killed by a process that is not its parent (here: its launcher is gone too)
    shows failed in the run list, in `d3m show` and to find_active, and its signal is unknown."""
    run = store.create("sleepy", {})
    launcher = subprocess.run(
        [sys.executable, "-c", "import sys; from core.runs import jobs; from core.runs.store import RunStore; "
         "r = RunStore(sys.argv[1]).get(sys.argv[2]); print(jobs.start(r, 'tests.job_targets:sleepy'))",
         str(store.workdir), run.id], capture_output=True, text=True, check=True,
        env=dict(os.environ, PYTHONPATH=os.getcwd()))
    pid = int(launcher.stdout.split()[-1])
    wait_until(run, lambda s: s["state"] == "running")
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid):  # reaped by init, not by us
        assert time.monotonic() < deadline
        time.sleep(0.02)
    from core.cli import main
    from core.views.summary import runs_frame
    main(["show", run.id, "--workdir", str(store.workdir)])
    assert '"state": "failed"' in capsys.readouterr().out
    assert runs_frame(store).set_index("run").loc[run.id, "state"] == "failed"
    assert store.find_active("sleepy", {}) is None
    error = run.status()["error"]
    assert error.startswith(f"job process died (pid {pid}") and "unknown" in error


@pytest.mark.parametrize("target, message", [
    (f"{T}:nope", "has no attribute 'nope'"),
    ("tests.no_such_module:f", "No module named 'tests.no_such_module'"),
    ("no_colon", "expected a job name"),
    (f"{T}:not_callable", "is not callable"),
])
def test_unknown_target_fails_clearly(store, target, message):
    run = store.create("bad", {})
    jobs.start(run, target)
    status = jobs.wait(run, poll=0.05, timeout=20)
    assert status["state"] == "failed"
    assert target in status["error"] and message in status["error"]


def test_run_inline_same_bookkeeping(store):
    run = store.create("count", {"n": 3})
    seen = []
    jobs.run_inline(run, f"{T}:count", report=lambda *a: seen.append(a))
    status = run.status()
    assert status["state"] == "done" and status["pid"] == os.getpid()
    assert (status["stage"], status["done"], status["total"], status["fraction"]) == ("counting", 3, 3, 1.0)
    assert seen == [("counting", 1, 3), ("counting", 2, 3), ("counting", 3, 3)]
    assert run.read_json("result")["total"] == 6
    assert jobs.refresh(run) == status

    failing = store.create("boom", {})
    with pytest.raises(ValueError, match="boom"):
        jobs.run_inline(failing, f"{T}:boom")
    status = failing.status()
    assert status["state"] == "failed" and "boom" in status["traceback"]

    bad = store.create("bad", {})
    with pytest.raises(ValueError, match="nope"):
        jobs.run_inline(bad, f"{T}:nope")
    assert bad.status()["state"] == "failed"


def test_a_run_is_executed_once(store):
    run = store.create("count", {"n": 1})
    jobs.run_inline(run, f"{T}:count")
    with pytest.raises(ValueError, match="already started"):
        jobs.start(run, f"{T}:count")
    with pytest.raises(ValueError, match="already started"):
        jobs.run_inline(run, f"{T}:count")


def test_reporter_throttles_but_keeps_stage_changes_and_ends(store):
    run = store.create("x", {})
    report = jobs.reporter(run, min_interval=60)
    report("a", 1, 100)
    assert run.status()["done"] == 1
    report("a", 2, 100)  # too soon: not written
    assert run.status()["done"] == 1
    report("a", 100, 100)  # stage finished: written
    assert (run.status()["done"], run.status()["fraction"]) == (100, 1.0)
    report("b", 0, 0)  # new stage: written
    assert (run.status()["stage"], run.status()["fraction"]) == ("b", 0.0)


def test_cancel_queued_run_never_started(store):
    run = store.create("x", {})
    assert jobs.cancel(run)["state"] == "cancelled"


def test_cancel_right_after_start(store):
    run = store.create("sleepy", {})
    pid = jobs.start(run, f"{T}:sleepy")
    assert jobs.cancel(run)["state"] == "cancelled"
    assert not pid_alive(pid)


def test_job_outlives_the_process_that_started_it(store, tmp_path):
    """Like a Streamlit rerun or a closed terminal: the launcher exits, the job goes on."""
    run = store.create("count", {"n": 3, "delay": 0.2})
    launcher = (f"from core.runs.jobs import start; from core.runs.store import RunStore; "
                f"print(start(RunStore({str(store.workdir)!r}).get({run.id!r}), '{T}:count'))")
    out = subprocess.run([sys.executable, "-c", launcher], cwd=jobs.PROJECT_ROOT,
                         capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    assert os.getsid(pid) == pid  # its own session: no terminal hangup reaches it
    status = jobs.wait(run, poll=0.05, timeout=20)
    assert status["state"] == "done" and status["pid"] == pid
    assert run.read_json("result")["total"] == 6


def test_job_cancelled_before_it_began_does_not_run(store):
    run = store.create("count", {"n": 1})
    run.set_status(target=f"{T}:count", state="cancelled")  # as if cancelled between start and launch
    child = subprocess.run([sys.executable, "-m", "core.runs.jobs", str(run.path), f"{T}:count"],
                           cwd=jobs.PROJECT_ROOT)
    assert child.returncode == 0
    assert run.status()["state"] == "cancelled" and not run.has("result")


def test_child_exit_codes(store):
    def child(*args):
        return subprocess.run([sys.executable, "-m", "core.runs.jobs", *args], cwd=jobs.PROJECT_ROOT,
                              capture_output=True, text=True)

    assert child().returncode == 2
    run = store.create("boom", {})
    run.set_status(target=f"{T}:boom")
    failed = child(str(run.path), f"{T}:boom")
    assert failed.returncode == 1 and "ValueError: boom" in failed.stderr
    assert run.status()["state"] == "failed"


def test_two_resumes_at_once_one_runs_the_other_joins(store):
    run = store.create("sleepy", {})
    jobs.start(run, f"{T}:sleepy")
    wait_until(run, lambda s: s["state"] == "running")
    jobs.cancel(run, grace=10)
    assert jobs.resume_or_join(run) is run  # resumed
    pid = run.status()["pid"]
    assert jobs.resume_or_join(run) is run and run.status()["pid"] == pid  # joined, not started twice
    with pytest.raises(ValueError, match="only a failed or cancelled run can be resumed"):
        jobs.resume(run)
    assert run.status()["resumed"] == 1
    jobs.cancel(run, grace=10)
