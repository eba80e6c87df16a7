"""The dataset format (metadata.csv + images) and its checks: every problem in a folder, found
before anything is loaded, as `DatasetIssue`s (core/errors.py) naming file, line, column and
value. Images are decoded and checked by core/data/images.py.

Table format: `metadata.csv` with the required columns

    filename  image path relative to the folder (any format PIL reads)
    label     the class (integers or strings)
    split     train | val | test

and an optional `group` column. Every other column is an attribute; all cells are read as
strings (surrounding spaces stripped, blank lines ignored).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd

from core.data.images import decode_images
from core.errors import DatasetIssue, brief, csv_issue, row_issue
from core.progress import silent

METADATA = "metadata.csv"
REQUIRED = ("filename", "label", "split")
GROUP = "group"
SPLITS = ("train", "val", "test")
_INT = re.compile(r"[+-]?\d+")


def metadata_path(root: str | Path, metadata: str = METADATA) -> Path:
    """The metadata table: `root/metadata`, or `root` itself when it names a file."""
    if Path(metadata).name != metadata or metadata in ("", ".", ".."):
        raise ValueError(f"metadata {metadata!r} must be a file name inside the dataset folder")
    root = Path(root).resolve()
    return root if root.is_file() else root / metadata


def validate_dataset(
    root: str | Path, group_attribute: str | None = None, check_images: bool = True,
    metadata: str = METADATA,
) -> list[DatasetIssue]:
    """Every problem found in a dataset folder; an empty list means it loads.

    With `check_images=False` images are only checked to exist, not opened (fast).
    """
    csv = metadata_path(root, metadata)
    df, paths, issues = inspect(csv, group_attribute)
    if check_images and df is not None:
        issues += decode_images(csv, df, paths, None, silent)
    return issues


def inspect(
    csv: Path, group_attribute: str | None
) -> tuple[pd.DataFrame | None, list[Path | None], list[DatasetIssue]]:
    """All checks but decoding images.

    Returns the table (indexed by metadata.csv line number, None when unusable), each row's
    image path (None where it is unusable) and the issues.
    """
    df, issues = _read_csv(csv)
    if df is None:
        return None, [], issues
    issues += _check_columns(csv, df, group_attribute)
    if not set(REQUIRED) <= set(df.columns):
        return None, [], issues
    paths, path_issues = _resolve_files(csv, df)
    issues += sorted(_check_cells(csv, df) + path_issues, key=lambda issue: issue.row)
    issues += _check_coverage(csv, df, group_attribute)
    return df, paths, issues


def _read_csv(csv: Path) -> tuple[pd.DataFrame | None, list[DatasetIssue]]:
    if not csv.is_file():
        return None, [csv_issue(csv, " does not exist: the dataset folder needs one")]
    try:
        # Blank lines are kept while reading so that row positions give true line numbers.
        df = pd.read_csv(
            csv, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig"
        )
    except pd.errors.EmptyDataError:
        return None, [csv_issue(csv, " is empty")]
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        return None, [csv_issue(csv, f" cannot be read as CSV: {brief(exc)}")]
    df.columns = [str(c).strip() for c in df.columns]
    df = df.fillna("").apply(lambda col: col.str.strip())
    df.index += 2  # header is line 1
    df = df[~(df == "").all(axis=1)]
    if df.empty:
        return None, [csv_issue(csv, " has a header but no data rows")]
    return df, []


def _check_columns(csv: Path, df: pd.DataFrame, group_attribute: str | None) -> list[DatasetIssue]:
    columns = list(df.columns)
    found = f"(its columns are: {', '.join(columns)})"
    issues = [
        csv_issue(csv, f" has no '{c}' column {found}", c) for c in REQUIRED if c not in columns
    ]
    attributes = attribute_columns(columns)
    if group_attribute is not None and group_attribute not in attributes:
        detail = (
            f": group_attribute '{group_attribute}' is not an attribute column "
            f"(attribute columns: {', '.join(attributes) or 'none'})"
        )
        issues.append(csv_issue(csv, detail, group_attribute, group_attribute))
    return issues


def _check_cells(csv: Path, df: pd.DataFrame) -> list[DatasetIssue]:
    """Empty filename/label/group cells and unknown split values."""
    issues = []
    for column in ("filename", "label", GROUP):
        if column in df.columns:
            for line in df.index[df[column] == ""]:
                issues.append(row_issue(csv, line, column, "", "the cell is empty"))
    for line, value in df["split"][~df["split"].isin(SPLITS)].items():
        detail = f"unknown split '{value}' (expected train, val or test)"
        issues.append(row_issue(csv, line, "split", value, detail))
    return issues


def _resolve_files(csv: Path, df: pd.DataFrame) -> tuple[list[Path | None], list[DatasetIssue]]:
    """Each row's image path, or None where it is empty, unsafe, a duplicate or missing."""
    base = csv.parent
    paths: list[Path | None] = []
    issues: list[DatasetIssue] = []
    first_use: dict[str, int] = {}
    for line, name in df["filename"].items():
        paths.append(None)
        key = os.path.normcase(os.path.normpath(name))
        if not name:
            continue  # reported by _check_cells
        if problem := _unsafe_path(name, base):
            issues.append(row_issue(csv, line, "filename", name, f"filename '{name}' {problem}"))
        elif key in first_use:
            detail = f"filename '{name}' is already used on line {first_use[key]}"
            issues.append(row_issue(csv, line, "filename", name, detail))
        elif not (base / name).is_file():
            detail = f"image file {base / name} does not exist"
            issues.append(row_issue(csv, line, "filename", name, detail, file=base / name))
        else:
            paths[-1] = base / name
        first_use.setdefault(key, line)
    return paths, issues


def _unsafe_path(name: str, base: Path) -> str | None:
    """Why a filename would read outside the dataset folder, or None when it stays inside."""
    parts = PureWindowsPath(name)  # splits on both / and \, and sees drives and roots
    if parts.anchor:
        return "is an absolute path; filenames must be relative to the dataset folder"
    if ".." in parts.parts or not (base / name).resolve().is_relative_to(base):
        return "escapes the dataset folder"
    return None


def _check_coverage(
    csv: Path, df: pd.DataFrame, group_attribute: str | None
) -> list[DatasetIssue]:
    """Every class needs train and val examples; every group needs val examples."""
    df = df[df["split"].isin(SPLITS) & (df["label"] != "")]
    present = set(zip(df["label"], df["split"]))
    issues = []
    for c in ordered(df["label"]):
        for s in ("train", "val"):
            if (c, s) not in present:
                detail = f": class '{c}' (column 'label') has no examples in the '{s}' split"
                issues.append(csv_issue(csv, detail, "label", c))
    column = group_column(df.columns, group_attribute)
    if column is None:
        return issues  # groups are the classes, checked above
    df = df[df[column] != ""] if column == GROUP else df
    labels, class_names = value_index(df["label"])
    groups, names = group_index(df, labels, class_names, group_attribute)
    for g in sorted(set(range(len(names))) - set(groups[(df["split"] == "val").to_numpy()])):
        detail = f": group '{names[g]}' (column '{column}') has no examples in the 'val' split"
        issues.append(csv_issue(csv, detail, column, names[g]))
    return issues


def attribute_columns(columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c not in (*REQUIRED, GROUP)]


def ordered(values: Iterable[str]) -> list[str]:
    """Distinct values, sorted numerically when all are integers ("2" < "10")."""
    unique = set(values)
    if all(_INT.fullmatch(v) for v in unique):
        return sorted(unique, key=lambda v: (int(v), v))
    return sorted(unique)


def value_index(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each value's int64 position among the `_ordered` distinct values, and those values."""
    names = ordered(values)
    position = {name: i for i, name in enumerate(names)}
    return values.map(position).to_numpy(np.int64), names


def group_column(columns: Iterable[str], group_attribute: str | None) -> str | None:
    """The column groups come from: `group`, else the group attribute, else None (classes)."""
    columns = list(columns)
    if GROUP in columns:
        return GROUP
    return group_attribute if group_attribute in attribute_columns(columns) else None


def group_index(
    df: pd.DataFrame, labels: np.ndarray, class_names: list[str], group_attribute: str | None
) -> tuple[np.ndarray, list[str]]:
    """Group index per row and group names; (label, attribute) groups sort by class first."""
    column = group_column(df.columns, group_attribute)
    if column is None:
        return labels, class_names
    if column == GROUP:
        return value_index(df[GROUP])
    values, value_names = value_index(df[column])
    _, first, groups = np.unique(
        labels * len(value_names) + values, return_index=True, return_inverse=True
    )
    names = [f"label={class_names[labels[i]]}, {column}={value_names[values[i]]}" for i in first]
    return groups.reshape(-1).astype(np.int64), names
