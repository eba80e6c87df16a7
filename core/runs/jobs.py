"""Background jobs: a plain function `target(run, report)` run in its own detached process.

The child (`python -m core.runs.jobs <run folder> <job name>`) starts a new
session, so neither a Streamlit rerun nor a closed terminal stops it, and everything it
does is recorded in the run folder: status.json (state, progress, error and traceback)
and log.txt (its stdout and stderr). Watchers only ever read those files, plus the pid
to notice a job that died without saying so.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from core.errors import describe_os_error, is_disk_full
from core.progress import ReportFn
from core.config import PROJECT_ROOT
from core.runs.names import canonical, resolve
from core.runs.process import gone, signal_group, utcnow
from core.runs.store import ACTIVE_STATES, Run, RunStore

class JobCancelled(BaseException):
    """Raised inside the child on SIGTERM. A BaseException, so a target's `except Exception`
    does not swallow it while its `finally` blocks still run."""


def is_active(status: dict) -> bool:
    return status.get("state") in ACTIVE_STATES


def start(run: Run, target: str) -> int:
    """Launch `target` for a fresh run in a detached child process; returns its pid."""
    _claim(run, target)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    with open(run.file("log.txt"), "ab") as log:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "core.runs.jobs", str(run.path.resolve()), target],
                cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:
            run.set_status(state="failed", error=f"could not start job: {exc}", finished_at=utcnow())
            raise
    # Kept, so subprocess's own clean-up never reaps it: Run.status() does, and so learns
    # the signal that killed it.
    _CHILDREN[proc.pid] = proc
    # Only the pid is merged: the child may already have moved the state on to running.
    run.set_status(pid=proc.pid)
    return proc.pid


RESUMABLE = ("failed", "cancelled")


def get_or_start(store: RunStore, kind: str, config: dict, target: str, create: Callable[[], Run], *,
                 parent: str | None = None, reuse: tuple[str, ...] = ("done", "active"), resume: bool = True,
                 check: Callable[[], object] | None = None, inline: bool = False,
                 report: ReportFn | None = None) -> Run:
    """The one way every caller (CLI, pages, benchmarks, studies) gets a run for `config`.

    In order: a finished run with exactly this config ("done" in `reuse`), one still running
    ("active": returned to be followed), then, after `check` (which raises on bad input before
    any folder exists), a failed, cancelled or dead one resumed in its folder from its last
    finished stage (`resume`), else a new one from `create()` started as a background job, or
    in this process with `inline` (finished, or raised, when this returns)."""
    if "done" in reuse and (found := store.find_done(kind, config, parent)) is not None:
        return found
    if "active" in reuse and (found := store.find_active(kind, config, parent)) is not None:
        return found
    if check is not None:
        check()
    resumable = store.find_resumable(kind, config, parent) if resume else None
    if resumable is not None:
        return resume_or_join(resumable, inline=inline)
    run = create()
    if inline:
        run_inline(run, target, report)
    else:
        start(run, target)
    return run
_CHILDREN: dict[int, subprocess.Popen] = {}


def resume(run: Run, inline: bool = False, report: ReportFn | None = None) -> Run:
    """Run a failed or cancelled run's job again in its own folder; the target skips every
    stage whose completion marker exists (core/runs/stages.py). Two resumes at once: one wins, the
    other gets a ValueError."""
    target = run.status().get("target")  # live: a dead job is 'failed' by now
    if not target:
        raise ValueError(f"run {run.id} was never started: nothing to resume")

    def reopen(status: dict) -> dict:
        if status["state"] not in RESUMABLE:
            raise ValueError(f"run {run.id} is {status['state']}: only a failed or cancelled run can be resumed")
        return {"state": "queued", "target": None, "pid": None, "error": None, "traceback": None,
                "finished_at": None, "resumed": int(status.get("resumed") or 0) + 1}

    run.update_status(reopen)
    target = canonical(target)
    for stale in run.path.rglob(".*.tmp"):  # an atomic write cut short: never part of a result
        stale.unlink(missing_ok=True)
    if inline:
        run_inline(run, target, report)
    else:
        start(run, target)
    return run


def resume_or_join(run: Run, inline: bool = False) -> Run:
    """Resume `run`, or, when another process (a second click or CLI) resumed it a moment
    earlier, return it to be followed instead of failing."""
    try:
        return resume(run, inline=inline)
    except ValueError:
        if not inline and is_active(run.status()):
            return run
        raise


def run_inline(run: Run, target: str, report: ReportFn | None = None) -> None:
    """Run `target` in this process with the same status bookkeeping as a job.

    Progress goes to status.json and also to `report` if given (e.g. a tqdm reporter).
    Errors are recorded and then re-raised, so a debugger or test sees them; Ctrl-C
    marks the run cancelled.
    """
    _claim(run, target)
    to_status = reporter(run)
    if report is None:
        _execute(run, target, to_status)
        return

    def both(stage: str, done: int, total: int) -> None:
        to_status(stage, done, total)
        report(stage, done, total)

    _execute(run, target, both)


def reporter(run: Run, min_interval: float = 0.5) -> ReportFn:
    """A `report(stage, done, total)` writing progress into status.json.

    Writes at most every `min_interval` seconds, except that a new stage and a finished
    stage (done == total) are always written, so no stage goes unseen.
    """
    last = {"stage": None, "time": float("-inf")}

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == last["stage"] and done < total and now - last["time"] < min_interval:
            return
        last.update(stage=stage, time=now)
        run.set_status(stage=stage, done=done, total=total,
                       fraction=min(done / total, 1.0) if total else 0.0)

    return report


def refresh(run: Run) -> dict:
    """The run's live status (a dead job is marked failed first): `Run.status()`, the one
    reader every view, page and command uses."""
    return run.status()


def wait(run: Run, on_status: Callable[[dict], None] | None = None, poll: float = 0.3,
         timeout: float | None = None) -> dict:
    """Poll until the run reaches a terminal state; TimeoutError after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = refresh(run)
        if on_status is not None:
            on_status(status)
        if not is_active(status):
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"run {run.id} still {status['state']} after {timeout} s")
        time.sleep(poll)


def cancel(run: Run, grace: float = 5.0) -> dict:
    """Stop a run's job: SIGTERM its process group, SIGKILL after `grace` seconds.

    Returns the final status; a run that already finished is returned unchanged.
    """
    status = refresh(run)
    if not is_active(status):
        return status
    pid = status.get("pid")
    if pid == os.getpid():
        raise ValueError(f"run {run.id} is running inline in this process; interrupt it instead")
    if pid is not None:
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not gone(pid):
            if time.monotonic() >= deadline:
                signal_group(pid, signal.SIGKILL)
                deadline = float("inf")  # SIGKILL cannot be ignored: just wait for the exit
            time.sleep(0.05)
    # The child normally records 'cancelled' itself; this covers one killed before it could.
    return run.update_status(lambda s: {"state": "cancelled", "finished_at": utcnow()}
                             if is_active(s) else None)


def main(argv: list[str] | None = None) -> int:
    """The child process: run the target, record the outcome; exit 0, 1 (failed) or 143."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m core.runs.jobs <run folder> <job name | package.module:function>", file=sys.stderr)
        return 2
    path = Path(args[0])
    run = RunStore(path.parent.parent).get(path.name)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _execute(run, args[1], reporter(run))
    except JobCancelled:
        return 128 + signal.SIGTERM
    except Exception:
        traceback.print_exc()  # into log.txt too
        return 1
    return 0


def _execute(run: Run, target: str, report: ReportFn) -> None:
    status = run.update_status(lambda s: {"state": "running", "pid": os.getpid(),
                                          "started_at": utcnow()} if s["state"] == "queued" else None)
    if status["state"] != "running":
        return  # cancelled before it began
    try:
        resolve(target)(run, report)
    except (JobCancelled, KeyboardInterrupt):
        run.set_status(state="cancelled", finished_at=utcnow())
        raise
    except Exception as exc:
        run.set_status(state="failed", error=error_line(exc),
                       traceback=traceback.format_exc(), finished_at=utcnow())
        raise
    run.set_status(state="done", fraction=1.0, finished_at=utcnow())


def error_line(exc: Exception) -> str:
    """A failed run's error: file-system errors by kind and path (disk full, permission, ...),
    others as `Type: message`."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return describe_os_error(exc) + (" (earlier artifacts are intact; free space and resume the run)"
                                         if is_disk_full(exc) else "")
    return f"{type(exc).__name__}: {exc}"


def _claim(run: Run, target: str) -> None:
    """Record the target of a fresh run, atomically, so a run is executed only once (its
    artifacts belong to that execution) even if two clicks try to start it together."""

    def claim(status: dict) -> dict:
        if status["state"] != "queued" or status.get("target"):
            raise ValueError(f"run {run.id} was already started (state {status['state']}); "
                             "create a new run")
        return {"target": target}

    run.update_status(claim)


def _on_sigterm(signum: int, frame: object) -> None:
    raise JobCancelled()


if __name__ == "__main__":
    sys.exit(main())
