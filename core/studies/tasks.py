"""What a worker computes for one task, and how its runs travel back to the driver.

A task runs in a work folder of its own on its node (`workspace`, named by the task's config),
through the same `start_analysis` / `start_debias` (inline, so core/runs/jobs.get_or_start: a
failed or dead run there is resumed from its last finished stage) as the CLI, and returns the
run folders it made as {relative path: bytes}; the driver writes them into the run store under
the same run ids (`import_runs`), so workers need no shared file system for results. An
analysis's feature stores (ensemble/features_*) travel with it: with ensemble/factors they are
its scores (core/attribution/factors.py). A task that Ray gave a GPU refuses to run without one (`check_gpu`).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.config import AnalysisConfig, from_dict
from core.data.dataset import reused
from core.pipeline.analysis import TARGET, start_analysis
from core.pipeline.debias import start_debias
from core.runs.store import Run, RunStore
from core.studies.cluster import this_node
from core.studies.nodes import image_cache, node_dir
from core.studies.resources import check_gpu
from core.studies.study_runs import MEMBERS_TARGET

Files = dict[str, bytes]


def pack(folder: Path) -> Files:
    """Every file of a (finished) run folder but lock and temporary files, as bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not path.name.startswith("."):
            out[rel] = path.read_bytes()
    return out


def unpack(files: Files, folder: Path) -> None:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def import_runs(store: RunStore, runs: dict[str, Files]) -> None:
    """Write returned run folders into the store under their own ids (a run already there is
    kept: a retried import adds nothing). Each folder appears whole, by one rename."""
    store.runs_dir.mkdir(parents=True, exist_ok=True)
    for run_id, files in runs.items():
        dest = store.runs_dir / run_id
        if dest.exists():
            continue
        tmp = store.runs_dir / f".importing-{run_id}-{secrets.token_hex(3)}"
        unpack(files, tmp)
        tmp.rename(dest)


@contextmanager
def measured() -> Iterator[dict]:
    """Wall time, CPU time (all threads of this process) and peak resident memory of the block.

    The peak is VmHWM after resetting it (Linux: writing 5 to /proc/self/clear_refs), so a
    reused worker process reports this task's peak, not its lifetime's; elsewhere ru_maxrss."""
    reset = _reset_peak()
    wall, cpu = time.perf_counter(), time.process_time()
    out: dict = {}
    yield out
    out.update(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu,
               peak_mb=_peak_kb(reset) / 1024)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_kb(reset: bool) -> float:
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def task_key(*parts: object) -> str:
    """A task's folder name: the same on every try of the same task (its config, in order)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@contextmanager
def workspace(key: str, driver_cache: str | None, configured: str | None = None) -> Iterator[RunStore]:
    """The task's work folder on this node (core/studies/nodes.py): kept when the worker
    process is killed, so the next try of the same task (Ray's retry, or the study started
    again) resumes the runs in it from their last finished stage; removed once the task returns
    or raises. One task at a time holds it (a lock the kernel drops when its process dies), so
    a try never works beside a worker of an earlier try that is still being stopped. Its image
    cache is the driver's when this node can read it, else this node's own (decoded once)."""
    tasks = node_dir(configured) / "tasks"
    root = tasks / key
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks.parent / "locks").mkdir(exist_ok=True)
    with open(tasks.parent / "locks" / key, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (root / "runs").mkdir(parents=True, exist_ok=True)
        cache = image_cache(driver_cache, configured)
        cache.mkdir(parents=True, exist_ok=True)
        if not (root / "cache").exists():
            os.symlink(cache.resolve(), root / "cache")
        try:
            yield RunStore(root)
        finally:
            remove(root)


def remove(root: Path) -> None:
    """Remove a task folder by renaming it away first: a worker killed while deleting (a try
    being stopped) leaves a hidden leftover, never a half-deleted folder that the next try
    would take for runs to resume. Leftovers of earlier removals go too."""
    if root.exists():
        root.rename(root.parent / f".removing-{root.name}-{secrets.token_hex(3)}")
    for folder in root.parent.glob(".removing-*"):
        shutil.rmtree(folder, ignore_errors=True)


def finished(run: Run) -> Run:
    """`run` if it is done; a run found still active here (a duplicate task) is an error."""
    state = run.status().get("state")
    if state != "done":
        raise RuntimeError(f"run {run.id} in this task's folder is {state}, not done")
    return run


def where(device: str) -> dict:
    """Where the task ran: node, host and the device it trained on."""
    node = this_node()
    return {"node": node.get("id"), "node_name": node.get("name"), "host": socket.gethostname(), "device": device}


def analysis_task(config: dict, cache_dir: str | None = None, node_dir_: str | None = None,
                  members: bool = False) -> dict:
    """Run (or resume) one analysis; returns {"id", "runs": {id: files}} with resources.json
    inside. With `members` its ensemble members are Ray tasks of their own."""
    check_gpu()
    cfg = from_dict(AnalysisConfig, config)
    with workspace(task_key("analysis", config), cache_dir, node_dir_) as store:
        with measured() as used, reused():
            run = finished(start_analysis(store, cfg, inline=True, target=MEMBERS_TARGET if members else TARGET))
        run.write_json("resources", {**used, **where(run.read_json("metrics")["device"])})
        return {"id": run.id, "runs": {run.id: pack(run.path)}}


def method_task(analysis: dict, method: str, params: dict, control: bool, cache_dir: str | None = None,
                node_dir_: str | None = None) -> dict:
    """Run (or resume) one method (and its random control) on a packed analysis; returns the new runs."""
    check_gpu()
    with workspace(task_key("method", analysis["id"], method, params, control), cache_dir, node_dir_) as store:
        import_runs(store, analysis["runs"])
        with measured() as used, reused():
            run = finished(start_debias(store, analysis["id"], method, params, control=control, inline=True))
        run.write_json("resources", {**used, **where(run.read_json("metrics")["device"])})
        return {"id": run.id, "runs": {r.id: pack(r.path) for r in store.list("debias")}}
