"""Progress reporting shared by jobs (status.json), the CLI (tqdm) and tests (no-op).

A reporter is any callable `report(stage, done, total)`; long functions call it as they go.
"""
from __future__ import annotations

from typing import Callable, Protocol


class Reporter(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None: ...


def silent(stage: str, done: int, total: int) -> None:
    """The default reporter: says nothing."""


def scaled(report: Reporter, prefix: str) -> Reporter:
    """A reporter that prefixes every stage name (e.g. 'model 2/5: ')."""

    def inner(stage: str, done: int, total: int) -> None:
        report(f"{prefix}{stage}", done, total)

    return inner


ReportFn = Callable[[str, int, int], None]

# What each reporting activity counts (a stage is "<prefix><activity>", e.g. "model 2/5: training").
UNITS = {"training": "steps", "featurizing": "examples", "scoring": "targets", "loading images": "images"}


def unit_of(stage: str) -> str:
    """The unit of a stage's done/total counts ('model 2/5: training' -> 'steps')."""
    return next((unit for activity, unit in UNITS.items() if stage.endswith(activity)), "items")


def progress_text(stage: str, done: int, total: int) -> str:
    """How a person reads a stage's progress: 'ERM training: 63/756 steps'."""
    return f"{stage}: {done:,}/{total:,} {unit_of(stage)}" if total else stage
