"""A dataset's content fingerprint, to tell whether two machines see the same copy at a path.

Parts: the SHA-256 of the metadata table's bytes, every image file's size (in table order) and
the SHA-256 of the bytes of up to SAMPLE images spread evenly over the table. File times are
left out on purpose: a faithful copy (cp, rsync without -t) has other mtimes. A different copy
with the same table and sizes and the same sampled images goes unnoticed; reading every image
would cost as much as decoding them.
"""
from __future__ import annotations

import hashlib

import numpy as np

from core.config import DataConfig
from core.data.validate import inspect, metadata_path
from core.errors import DatasetError

SAMPLE = 32


def fingerprint(cfg: DataConfig) -> dict:
    """{table, files, sizes, sample} of the dataset `cfg` names; DatasetError when it does not load."""
    csv = metadata_path(cfg.root, cfg.metadata)
    df, paths, issues = inspect(csv, cfg.group_attribute)
    if issues or df is None:
        raise DatasetError(issues)
    sizes = [p.stat().st_size for p in paths]  # every path is set once inspection passed
    sample = hashlib.sha256()
    for i in np.unique(np.linspace(0, len(paths) - 1, min(SAMPLE, len(paths))).astype(int)):
        sample.update(paths[i].read_bytes())
    return {"table": hashlib.sha256(csv.read_bytes()).hexdigest(), "table_name": csv.name,
            "files": df["filename"].astype(str).tolist(), "sizes": sizes, "sample": sample.hexdigest()}


def difference(here: dict, there: dict) -> str | None:
    """The first way `there` differs from `here`, in words (None when they match)."""
    if here["table"] != there["table"]:
        return (f"its {here['table_name']} differs (SHA-256 {there['table'][:12]} there, "
                f"{here['table'][:12]} here)")
    for name, mine, theirs in zip(here["files"], here["sizes"], there["sizes"]):
        if mine != theirs:
            return f"image {name} is {theirs} bytes there, {mine} here"
    if here["sample"] != there["sample"]:
        return f"the contents of some of {SAMPLE} sampled images differ (same table, same file sizes)"
    return None
