"""Read a user's dataset folder (metadata.csv + images) into arrays, checking it first.

Folder format: `metadata.csv` with the required columns

    filename  image path relative to the folder (any format PIL reads)
    label     the class (integers or strings)
    split     train | val | test

and an optional `group` column. Every other column is an attribute; all cells are read as
strings (surrounding spaces stripped, blank lines ignored).

Groups come from the `group` column when there is one, else from (label, attribute) for the
attribute named by `DataConfig.group_attribute`, else the groups are the classes themselves,
so worst-group accuracy then is worst-class accuracy.

The table is `metadata.csv` unless `DataConfig.metadata` names another file in the folder (a
folder holding its own metadata.csv in another format, e.g. Waterbirds: see core/layouts.py);
`root` may also be the table file itself (`.../waterbirds/d3m_metadata.csv`).

Problems are reported as `DatasetIssue`s (core/dataset_errors.py); images are decoded and
cached by core/images.py.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd

from core.config import DataConfig
from core.dataset_errors import DatasetError, DatasetIssue, brief, csv_issue, row_issue
from core.images import decode_images, load_images
from core.progress import ReportFn, silent

METADATA = "metadata.csv"
REQUIRED = ("filename", "label", "split")
GROUP = "group"
SPLITS = ("train", "val", "test")
_INT = re.compile(r"[+-]?\d+")


@dataclass
class Dataset:
    """A loaded dataset; example id i is row i of metadata.csv (blank lines skipped)."""

    root: Path
    metadata: pd.DataFrame
    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 class index
    class_names: list[str]
    groups: np.ndarray  # int64 group index
    group_names: list[str]
    split: np.ndarray  # 'train' | 'val' | 'test'
    attributes: list[str]

    def idx(self, split: str) -> np.ndarray:
        """Sorted int64 example ids of one split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.split == split).astype(np.int64)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def frame(self, ids: np.ndarray) -> pd.DataFrame:
        """One row per example id: id, filename, class, group and every attribute."""
        meta = self.metadata.iloc[ids]
        return pd.DataFrame({"id": ids, "filename": meta["filename"].to_numpy(),
                             "class": np.asarray(self.class_names, dtype=object)[self.labels[ids]],
                             "group": np.asarray(self.group_names, dtype=object)[self.groups[ids]],
                             **{a: meta[a].astype(str).to_numpy() for a in self.attributes}})

    def group_class(self) -> np.ndarray:
        """For each group its class index when all its examples share one class, else -1."""
        out = np.full(self.n_groups, -1, dtype=np.int64)
        for g in range(self.n_groups):
            classes = np.unique(self.labels[self.groups == g])
            if len(classes) == 1:
                out[g] = classes[0]
        return out


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
    df, paths, issues = _inspect(csv, group_attribute)
    if check_images and df is not None:
        issues += decode_images(csv, df, paths, None, silent)
    return issues


def load_dataset(
    cfg: DataConfig, cache_dir: Path | None = None, report: ReportFn = silent
) -> Dataset:
    """Validate and load a dataset folder; raises DatasetError listing every problem.

    Resized images are cached in `cache_dir` (when given) under a hash of metadata.csv, the
    image size and each image file's size and mtime; a cache hit opens no image.
    """
    if cfg.image_size < 1:
        raise ValueError(f"image_size must be positive, got {cfg.image_size}")
    csv = metadata_path(cfg.root, cfg.metadata)
    df, paths, issues = _inspect(csv, cfg.group_attribute)
    if issues or df is None:
        raise DatasetError(issues)
    images = load_images(csv, df, paths, cfg.image_size, cache_dir, report)
    df = df.reset_index(drop=True)
    labels, class_names = _index(df["label"])
    groups, group_names = _groups(df, labels, class_names, cfg.group_attribute)
    return Dataset(
        root=csv.parent,
        metadata=df,
        images=images,
        labels=labels,
        class_names=class_names,
        groups=groups,
        group_names=group_names,
        split=df["split"].to_numpy(str),
        attributes=_attributes(df.columns),
    )


def _inspect(
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
    attributes = _attributes(columns)
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
    for c in _ordered(df["label"]):
        for s in ("train", "val"):
            if (c, s) not in present:
                detail = f": class '{c}' (column 'label') has no examples in the '{s}' split"
                issues.append(csv_issue(csv, detail, "label", c))
    column = _group_column(df.columns, group_attribute)
    if column is None:
        return issues  # groups are the classes, checked above
    df = df[df[column] != ""] if column == GROUP else df
    labels, class_names = _index(df["label"])
    groups, names = _groups(df, labels, class_names, group_attribute)
    for g in sorted(set(range(len(names))) - set(groups[(df["split"] == "val").to_numpy()])):
        detail = f": group '{names[g]}' (column '{column}') has no examples in the 'val' split"
        issues.append(csv_issue(csv, detail, column, names[g]))
    return issues


def _attributes(columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c not in (*REQUIRED, GROUP)]


def _ordered(values: Iterable[str]) -> list[str]:
    """Distinct values, sorted numerically when all are integers ("2" < "10")."""
    unique = set(values)
    if all(_INT.fullmatch(v) for v in unique):
        return sorted(unique, key=lambda v: (int(v), v))
    return sorted(unique)


def _index(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each value's int64 position among the `_ordered` distinct values, and those values."""
    names = _ordered(values)
    position = {name: i for i, name in enumerate(names)}
    return values.map(position).to_numpy(np.int64), names


def _group_column(columns: Iterable[str], group_attribute: str | None) -> str | None:
    """The column groups come from: `group`, else the group attribute, else None (classes)."""
    columns = list(columns)
    if GROUP in columns:
        return GROUP
    return group_attribute if group_attribute in _attributes(columns) else None


def _groups(
    df: pd.DataFrame, labels: np.ndarray, class_names: list[str], group_attribute: str | None
) -> tuple[np.ndarray, list[str]]:
    """Group index per row and group names; (label, attribute) groups sort by class first."""
    column = _group_column(df.columns, group_attribute)
    if column is None:
        return labels, class_names
    if column == GROUP:
        return _index(df[GROUP])
    values, value_names = _index(df[column])
    _, first, groups = np.unique(
        labels * len(value_names) + values, return_index=True, return_inverse=True
    )
    names = [f"label={class_names[labels[i]]}, {column}={value_names[values[i]]}" for i in first]
    return groups.reshape(-1).astype(np.int64), names


