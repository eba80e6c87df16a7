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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import DataConfig
from core.data.images import load_images
from core.data.validate import SPLITS, attribute_columns, group_index, inspect, metadata_path, value_index
from core.errors import DatasetError
from core.progress import ReportFn, silent


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
    df, paths, issues = inspect(csv, cfg.group_attribute)
    if issues or df is None:
        raise DatasetError(issues)
    images = load_images(csv, df, paths, cfg.image_size, cache_dir, report)
    df = df.reset_index(drop=True)
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


