"""Every write of a user's choices on an analysis: flagged examples, renamed pseudo-groups,
excluded subpopulation cells.

Two browser tabs (or users) may change them at once, so each change is a read-modify-write
under an exclusive lock on `<run>/.annotations.lock`, and the file is replaced atomically:
no update is lost and a reader never sees half a file. Pages read them through
core.views.data.persisted.
"""
from __future__ import annotations

import fcntl
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from core.runs.store import Run

FLAGGED = "flagged"
PSEUDO_GROUP_NAMES = "pseudo_group_names"
EXCLUDED_CELLS = "excluded_cells"


@contextmanager
def _locked(run: Run) -> Iterator[None]:
    with open(run.file(".annotations.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def change(run: Run, name: str, default: Any, edit: Callable[[Any], Any]) -> Any:
    """Apply `edit(current) -> new` to annotation `name` atomically; returns the new value."""
    with _locked(run):
        current = run.read_json(name) if run.has(f"{name}.json") else default
        new = edit(current)
        run.write_json(name, new)
        return new


def update_id_set(run: Run, name: str = FLAGGED, add: Iterable[int] = (), remove: Iterable[int] = ()) -> list[int]:
    """Add/remove example ids in an id set of the analysis (e.g. 'flagged'); returns the set."""
    add, remove = {int(i) for i in add}, {int(i) for i in remove}
    return change(run, name, [], lambda ids: sorted((set(ids) | add) - remove))


def rename_pseudo_group(run: Run, group: int, name: str) -> dict[str, str]:
    """Store a new name for pseudo-group `group` (blank: back to the default); returns the renames."""

    def edit(renamed: dict) -> dict:
        renamed = dict(renamed)
        if name.strip():
            renamed[str(group)] = name.strip()
        else:
            renamed.pop(str(group), None)
        return renamed

    return change(run, PSEUDO_GROUP_NAMES, {}, edit)


def toggle_cell(run: Run, cell: dict, excluded: bool) -> list[dict]:
    """Mark a subpopulation cell excluded (or not); returns all excluded cells."""
    cell = {"attribute": cell["attribute"], "value": str(cell["value"]), "class": cell["class"]}

    def edit(cells: list) -> list:
        cells = [c for c in cells if c != cell]
        return cells + [cell] if excluded else cells

    return change(run, EXCLUDED_CELLS, [], edit)
