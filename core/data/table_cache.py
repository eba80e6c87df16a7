"""The checked metadata table, cached as parquet under a hash of the table.

Checking a table parses the CSV and resolves, checks and stats every row's file: about 12 s at
160,000 rows on this machine, paid by every process that loads the dataset (each job, each
dashboard start). A table that passed every check is written to `table-<hash>.parquet` in the
cache folder, keyed by the table file's path and bytes, the group attribute and the checks'
version, and read back (about 0.1 s) while the table is unchanged. Only clean tables are
cached: a table with problems is checked afresh every time. A cache hit does not look at the
image files again; one deleted since is reported when its image is decoded (a cached image
array does not need it).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd


VERSION = "1"  # bump when the checks or the table's form change
_LINE = "__line__"  # the column holding the table's index (metadata.csv line numbers)


def table_key(csv: Path, group_attribute: str | None) -> str:
    digest = hashlib.sha256(f"{VERSION}|{csv.resolve()}|{group_attribute}|".encode())
    digest.update(csv.read_bytes())
    return digest.hexdigest()[:24]


def read_table(csv: Path, group_attribute: str | None, cache_dir: Path | None
               ) -> tuple[pd.DataFrame, list[Path]] | None:
    """The checked table and its image paths from the cache folder, None when not cached."""
    if cache_dir is None or not csv.is_file():
        return None
    cached = Path(cache_dir) / f"table-{table_key(csv, group_attribute)}.parquet"
    if not cached.is_file():
        return None
    df = pd.read_parquet(cached).set_index(_LINE)
    df.index.name = None
    return df, [csv.parent / name for name in df["filename"]]


def write_table(csv: Path, group_attribute: str | None, cache_dir: Path, df: pd.DataFrame) -> None:
    """Cache a table that passed every check (and whose images decoded)."""
    cached = Path(cache_dir) / f"table-{table_key(csv, group_attribute)}.parquet"
    if cached.is_file():
        return
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    df.rename_axis(_LINE).reset_index().to_parquet(tmp, index=False)
    os.replace(tmp, cached)
