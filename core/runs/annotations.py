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

import numpy as np

from core.data import categories
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
    if add and run.has("train_ids.npy"):
        unknown = sorted(add - set(np.asarray(run.read_array("train_ids")).tolist()))
        if unknown:
            raise ValueError(f"example {unknown[0]} is not a training example of {run.id}"
                             + (f" (nor are {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                             + ": only training examples can be flagged")
    return change(run, name, [], lambda ids: sorted((set(ids) | add) - remove))


def rename_pseudo_groups(run: Run, new: dict[int, str]) -> dict[str, str]:
    """Store new names for some pseudo-groups ({group: name}); returns all renames. Refused as a
    whole (ValueError naming the group and the name) when a name is empty or is already the
    name of another pseudo-group: the Debias page and reports tell the groups apart by name."""
    defaults = list(run.read_json("auto")["names"])
    new = {int(g): str(name).strip() for g, name in new.items()}
    for g, name in new.items():
        if not 0 <= g < len(defaults):
            raise ValueError(f"pseudo-group {g} does not exist (this analysis has {len(defaults)})")
        if not name:
            raise ValueError(f"pseudo-group {g}: the new name is empty; type a name, or reset to the default "
                             f"({defaults[g]!r})")

    def edit(renamed: dict) -> dict:
        renamed = {**renamed, **{str(g): name for g, name in new.items()}}
        current = [renamed.get(str(g)) or d for g, d in enumerate(defaults)]
        for g, name in new.items():
            other = next((h for h, n in enumerate(current) if n == name and h != g), None)
            if other is not None:
                raise ValueError(f"pseudo-group {g}: the name {name!r} is already the name of pseudo-group {other}")
        return {k: v for k, v in renamed.items() if v != defaults[int(k)]}

    return change(run, PSEUDO_GROUP_NAMES, {}, edit)


def rename_pseudo_group(run: Run, group: int, name: str) -> dict[str, str]:
    """Store a new name for pseudo-group `group` (rename_pseudo_groups); returns the renames."""
    return rename_pseudo_groups(run, {group: name})


def reset_pseudo_group_names(run: Run, groups: Iterable[int]) -> dict[str, str]:
    """Give some pseudo-groups back their default names; returns the remaining renames."""
    drop = {str(int(g)) for g in groups}
    return change(run, PSEUDO_GROUP_NAMES, {}, lambda renamed: {k: v for k, v in renamed.items() if k not in drop})


def toggle_cell(run: Run, cell: dict, excluded: bool) -> list[dict]:
    """Mark a subpopulation cell excluded (or not); returns all excluded cells."""
    cell = categories.cell(cell["attribute"], cell["value"], cell["class"])
    if excluded and run.has("subpopulations.csv"):
        table = categories.read_table(run.file("subpopulations.csv", create_parent=False))
        known = {tuple(r) for r in table[["attribute", "value", "class"]].itertuples(index=False)}
        if (cell["attribute"], cell["value"], cell["class"]) not in known:
            raise ValueError(f"no training example of class {cell['class']!r} has {cell['attribute']} = "
                             f"{cell['value']!r} (subpopulations.csv of {run.id}): nothing to exclude")

    def edit(cells: list) -> list:
        cells = [c for c in (categories.cell(c["attribute"], c["value"], c["class"]) for c in cells) if c != cell]
        return cells + [cell] if excluded else cells

    return change(run, EXCLUDED_CELLS, [], edit)
