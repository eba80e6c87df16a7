"""Class, group and attribute values are categories (text), whatever their dtype anywhere.

A label column of the integers 0 and 1, of the strings "0" and "1", or of True and False holds
two classes named by their text. The dataset table is read as text (core/data/validate.py) and
made text once more when a dataset is loaded (whatever cache it came from); every table the
project writes from it and reads back (subpopulations.csv, removed.csv, a cell the user
excluded) goes through here, so a class "0" never comes back as the integer 0, an attribute
value "NA" never as a missing value, and a cell is matched by text on every side.
Orders are the table's: numeric when every value is an integer ("2" before "10"), else sorted.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.validate import ordered

# Columns that hold category names wherever they appear (dataset tables and stored CSVs).
CATEGORY_COLUMNS = ("label", "group", "split", "filename", "attribute", "value", "class", "pseudo_group")


def name(value: object) -> str:
    """A category's name: the value's text as the table writes it (True -> "True", 0 -> "0")."""
    return str(value).strip()


def names(values: Iterable) -> np.ndarray:
    """Each value's name (object array of str)."""
    return np.asarray([name(v) for v in values], dtype=object)


def as_text(df: pd.DataFrame, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """`df` with `columns` (default: every column) as text, blanks for missing cells."""
    columns = list(df.columns if columns is None else [c for c in columns if c in df.columns])
    out = df.copy()
    for c in columns:
        if not (pd.api.types.is_string_dtype(out[c]) and not out[c].isna().any()):
            out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else name(v))
    return out


def read_table(path: str | Path, categories: Iterable[str] = CATEGORY_COLUMNS) -> pd.DataFrame:
    """A CSV the project wrote, its category columns as text (never 0 for "0", never NaN for
    "NA" or "None") and every other column numeric where all its cells are numbers."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    keep = set(categories)
    for c in df.columns:
        if c not in keep:
            try:
                df[c] = pd.to_numeric(df[c].replace("", np.nan))
            except (ValueError, TypeError):
                pass
    return df


def order(values: Iterable) -> list[str]:
    """Distinct names in the table's order (numeric when all are integers, else sorted)."""
    return ordered(names(values).tolist())


def cell(attribute: object, value: object, cls: object) -> dict:
    """A (class, attribute = value) subpopulation cell, every part as a name."""
    return {"attribute": name(attribute), "value": name(value), "class": name(cls)}
