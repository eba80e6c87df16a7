"""Completion markers of a job's stages, so a rerun resumes after the last finished one.

A stage writes its artifacts (atomically) and then its marker `stages/<name>.json`; on a
rerun an artifact is trusted only when its marker exists, so a half-written one is never used.
The marker may carry a little information about the stage (e.g. its training seconds).
"""
from __future__ import annotations

import shutil

from core.runs.store import Run


def is_done(run: Run, name: str) -> bool:
    return run.has(f"stages/{name}.json")


def info(run: Run, name: str) -> dict:
    return run.read_json(f"stages/{name}")


def mark_done(run: Run, name: str, details: dict | None = None) -> None:
    run.write_json(f"stages/{name}", details or {})


def forget(run: Run, *folders: str) -> None:
    """Drop every marker (and the given artifact folders): the next run starts over."""
    for name in ("stages", *folders):
        shutil.rmtree(run.file(name, create_parent=False), ignore_errors=True)
