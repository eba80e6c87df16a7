"""Read a user's dataset folder (metadata.csv + images) into arrays, checked first
(core/data/validate.py: the format and every check).

Groups come from the `group` column when there is one, else from (label, attribute) for the
attribute named by `DataConfig.group_attribute`, else the groups are the classes themselves,
so worst-group accuracy then is worst-class accuracy.

The table is `metadata.csv` unless `DataConfig.metadata` names another file in the folder (a
folder holding its own metadata.csv in another format, e.g. Waterbirds: see core/data/layouts.py);
`root` may also be the table file itself (`.../waterbirds/d3m_metadata.csv`). Images are decoded
and cached by core/data/images.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from core.config import DataConfig
from core.data import categories
from core.data.images import load_images
from core.data.table_cache import read_table, write_table
from core.data.validate import SPLITS, attribute_columns, group_index, inspect, metadata_path, value_index
from core.errors import DatasetError
from core.progress import ReportFn, silent


@dataclass
class Dataset:
    """A loaded dataset; example id i is row i of metadata.csv (blank lines skipped)."""

    root: Path
    metadata: pd.DataFrame
    images: np.ndarray  # uint8 (N, S, S, 3), a read-only np.memmap of the image cache
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
                             **{a: meta[a].to_numpy(dtype=object) for a in self.attributes}})

    def in_cell(self, ids: np.ndarray, cell: dict) -> np.ndarray:
        """Which of the examples `ids` lie in a (class, attribute = value) cell, matched by name
        (core/data/categories.py: a class or value given as 0, "0" or np.int64(0) is the same)."""
        if cell["attribute"] not in self.attributes:
            raise ValueError(f"unknown attribute {cell['attribute']!r} (attributes: {', '.join(self.attributes) or 'none'})")
        ids = np.asarray(ids, np.int64)
        names = np.asarray(self.class_names, dtype=object)[self.labels[ids]]
        values = self.metadata[cell["attribute"]].to_numpy()[ids]
        return (values == categories.name(cell["value"])) & (names == categories.name(cell["class"]))

    def group_class(self) -> np.ndarray:
        """For each group its class index when all its examples share one class, else -1."""
        out = np.full(self.n_groups, -1, dtype=np.int64)
        for g in range(self.n_groups):
            classes = np.unique(self.labels[self.groups == g])
            if len(classes) == 1:
                out[g] = classes[0]
        return out


_REUSED: dict | None = None  # loads kept while `reused()` is active


@contextmanager
def reused() -> Iterator[None]:
    """Within the block, loading the same dataset again (same config and cache folder, its
    table unchanged) returns the first load instead of checking every file again. For a study
    task, which goes through the same functions as the CLI (each loads the dataset: 2 to 4
    loads a task) after the study checked every node's copy once (core/studies/nodes.py)."""
    global _REUSED
    outer = _REUSED
    _REUSED = {} if outer is None else outer
    try:
        yield
    finally:
        _REUSED = outer


def load_dataset(
    cfg: DataConfig, cache_dir: Path | None = None, report: ReportFn = silent
) -> Dataset:
    """Validate and load a dataset folder; raises DatasetError listing every problem.

    With `cache_dir`, the checked table is cached there (core/data/table_cache.py) and the
    resized images too, under a hash of metadata.csv, the image size and resize rule and each
    image file's size and mtime; a cache hit opens no image. `images` is a read-only memory
    map of the cache file: index it by batches of ids (it never sits in memory whole).
    """
    if cfg.image_size < 1:
        raise ValueError(f"image_size must be positive, got {cfg.image_size}")
    if cfg.resize is not None and cfg.resize < cfg.image_size:
        raise ValueError(f"resize {cfg.resize} must be at least image_size {cfg.image_size} (it is cropped to it)")
    csv = metadata_path(cfg.root, cfg.metadata)
    key = None
    if _REUSED is not None and csv.is_file():
        stat = csv.stat()
        key = (cfg, str(Path(cache_dir).resolve()) if cache_dir else None, stat.st_mtime_ns, stat.st_size)
        if key in _REUSED:
            return _REUSED[key]
    data = _load(cfg, csv, cache_dir, report)
    if key is not None:
        _REUSED[key] = data
    return data


def _load(cfg: DataConfig, csv: Path, cache_dir: Path | None, report: ReportFn) -> Dataset:
    cached = read_table(csv, cfg.group_attribute, cache_dir)
    if cached is None:
        df, paths, issues = inspect(csv, cfg.group_attribute)
        if issues or df is None:
            raise DatasetError(issues)
    else:
        df, paths = cached
    images = load_images(csv, df, paths, cfg.image_size, cache_dir, report, cfg.resize)
    if cache_dir is not None:
        write_table(csv, cfg.group_attribute, cache_dir, df)
    df = categories.as_text(df.reset_index(drop=True))  # the one normalisation: every cell a name
    labels, class_names = value_index(df["label"])
    groups, group_names = group_index(df, labels, class_names, cfg.group_attribute)
    return Dataset(
        root=csv.parent,
        metadata=df,
        images=images,
        labels=labels,
        class_names=class_names,
        groups=groups,
        group_names=group_names,
        split=df["split"].to_numpy(str),
        attributes=attribute_columns(df.columns),
    )


