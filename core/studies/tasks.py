"""What a worker computes for one task, and how its runs travel back to the driver.

A task runs in a temporary work directory of its own, through the same `start_analysis` /
`start_debias` (inline) as the CLI, and returns the run folders it made as {relative path:
bytes}; the driver writes them into the run store under the same run ids (`import_runs`), so
workers need no shared file system for results. An analysis's feature stores
(ensemble/features_*) stay behind: they are a cache of the scores, which do travel.
"""
from __future__ import annotations

import os
import resource
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.pipeline.analysis import start_analysis
from core.config import AnalysisConfig, from_dict
from core.pipeline.debias import start_debias
from core.runs.store import RunStore

Files = dict[str, bytes]
LEFT_BEHIND = ("ensemble/features_",)


def pack(folder: Path) -> Files:
    """Every file of a run folder (but the feature stores and lock files) as bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(LEFT_BEHIND) and not path.name.startswith("."):
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


@contextmanager
def scratch(cache_dir: str | None) -> Iterator[RunStore]:
    """A temporary work directory; its image cache is `cache_dir` when this worker can read it
    (same machine or a shared path), else images are decoded here once."""
    tmp = Path(tempfile.mkdtemp(prefix="d3m-task-"))
    try:
        if cache_dir and Path(cache_dir).is_dir():
            os.symlink(cache_dir, tmp / "cache")
        yield RunStore(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def analysis_task(config: dict, cache_dir: str | None = None) -> dict:
    """Run one analysis; returns {"id", "runs": {id: files}} with resources.json inside."""
    with scratch(cache_dir) as store:
        with measured() as used:
            run = start_analysis(store, from_dict(AnalysisConfig, config), reuse=False, inline=True)
        run.write_json("resources", used)
        return {"id": run.id, "runs": {run.id: pack(run.path)}}


def method_task(analysis: dict, method: str, params: dict, control: bool, cache_dir: str | None = None) -> dict:
    """Run one method (and its random control) on a packed analysis; returns the new runs."""
    with scratch(cache_dir) as store:
        import_runs(store, analysis["runs"])
        with measured() as used:
            run = start_debias(store, analysis["id"], method, params, control=control, inline=True)
        run.write_json("resources", used)
        return {"id": run.id, "runs": {r.id: pack(r.path) for r in store.list("debias")}}
