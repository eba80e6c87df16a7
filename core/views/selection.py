"""What the Extremes, Alignment and Subpopulations pages show, as plain data (read only:
the user's choices are written by core/runs/annotations.py)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from core.data.dataset import Dataset
from core.methods.selection import default_k
from core.runs.store import Run
from core.views.data import persisted

LOW_COUNT = 10  # heatmap cells with fewer training examples are marked: their mean is noisy


def pseudo_group_names(analysis: Run) -> list[str]:
    """Auto-D3M pseudo-group names: the user's renames (pseudo_group_names.json) over auto.json's."""
    names = list(analysis.read_json("auto")["names"])
    renamed = persisted(analysis, "pseudo_group_names", {})
    return [renamed.get(str(g)) or name for g, name in enumerate(names)]


def class_extremes(data: Dataset, val_ids: np.ndarray, projection: np.ndarray, auto_groups: np.ndarray,
                   val_logits: np.ndarray, names: list[str], cls: int, n: int = 8) -> dict:
    """One class's validation examples along its top principal component (Auto-D3M).

    Returns `frame` (id, projection, pseudo-group, correct, true group), and for each pole
    ('low': the lower-performing 35% side, pseudo-group 2c; 'high': the rest, 2c + 1) its
    name, size, ERM accuracy, true-group make-up and the ids of its `n` most extreme examples.
    """
    rows = np.flatnonzero(data.labels[val_ids] == cls)
    ids = val_ids[rows]
    correct = val_logits[rows].argmax(1) == cls
    frame = pd.DataFrame({"id": ids, "projection": projection[rows],
                          "pseudo_group": [names[g] for g in auto_groups[rows]], "correct": correct,
                          "group": [data.group_names[g] for g in data.groups[ids]]})
    poles = {}
    for side, g in (("low", 2 * cls), ("high", 2 * cls + 1)):
        mask = auto_groups[rows] == g
        order = np.argsort(projection[rows][mask], kind="stable")
        extreme = order[:n] if side == "low" else order[::-1][:n]
        poles[side] = {"name": names[g], "pseudo_group": g, "count": int(mask.sum()),
                       "accuracy": float(correct[mask].mean()) if mask.any() else math.nan,
                       "make_up": frame.loc[mask, "group"].value_counts().to_dict(),
                       "ids": ids[mask][extreme]}
    return {"frame": frame, "poles": poles}


def extremes_overview(data: Dataset, val_ids: np.ndarray, projection: np.ndarray, auto_groups: np.ndarray,
                      val_logits: np.ndarray, names: list[str]) -> pd.DataFrame:
    """One row per class (class_extremes' poles): each side's size and ERM accuracy, the class
    whose low side does worst first, so a dataset with many classes shows where to look."""
    rows = []
    for cls, name in enumerate(data.class_names):
        poles = class_extremes(data, val_ids, projection, auto_groups, val_logits, names, cls, n=0)["poles"]
        rows.append({"class": name, "low side": poles["low"]["name"], "low: examples": poles["low"]["count"],
                     "low: ERM accuracy": poles["low"]["accuracy"], "high: examples": poles["high"]["count"],
                     "high: ERM accuracy": poles["high"]["accuracy"]})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["low: ERM accuracy", "class"], kind="stable").reset_index(drop=True)


def train_table(data: Dataset, train_ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """One row per training example: id, class, group, attributes and its score (A_i)."""
    return data.frame(train_ids).drop(columns="filename").assign(alignment=np.asarray(scores, np.float64))


def filter_examples(table: pd.DataFrame, classes: Iterable[str] | None = None,
                    attribute_values: dict[str, Iterable[str]] | None = None,
                    score_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """Rows of the class(es), attribute values and score range chosen (empty choice: all)."""
    mask = np.ones(len(table), bool)
    if classes:
        mask &= table["class"].isin(list(classes)).to_numpy()
    for attr, values in (attribute_values or {}).items():
        if values:
            mask &= table[attr].isin(list(values)).to_numpy()
    if score_range is not None:
        lo, hi = score_range
        mask &= table["alignment"].between(lo, hi).to_numpy()
    return table[mask]


def n_pages(n_rows: int, page_size: int) -> int:
    return max(1, math.ceil(n_rows / page_size))


def sorted_page(table: pd.DataFrame, sort_by: str, ascending: bool, page: int, page_size: int) -> pd.DataFrame:
    """Page `page` (1-based) of the table sorted by one column (ties by id)."""
    if page < 1 or page > n_pages(len(table), page_size):
        raise ValueError(f"page {page} is outside 1..{n_pages(len(table), page_size)}")
    ordered = table.sort_values([sort_by, "id"], ascending=[ascending, True], kind="stable")
    return ordered.iloc[(page - 1) * page_size: page * page_size]


def alignment_summary(scores: np.ndarray) -> dict:
    """Count, number with A_i < 0 (the default k), and range of the scores."""
    scores = np.asarray(scores, np.float64)
    return {"n": int(len(scores)), "negative": default_k(scores),
            "min": float(scores.min()), "max": float(scores.max()), "median": float(np.median(scores))}


def ids_from_points(points: Iterable[dict]) -> list[int]:
    """Example ids of plotly selection points (the id is each point's customdata)."""
    ids = []
    for p in points:
        cd = p.get("customdata")
        if cd is not None:
            ids.append(int(cd[0] if isinstance(cd, (list, tuple)) else cd))
    return sorted(set(ids))


def heatmap(subpop: pd.DataFrame, attribute: str, low_count: int = LOW_COUNT) -> dict[str, pd.DataFrame]:
    """Attribute value x class tables of mean A_i, counts, and which cells count < low_count."""
    rows = subpop[subpop["attribute"] == attribute]
    if rows.empty:
        raise ValueError(f"no subpopulations for attribute {attribute!r}")
    mean = rows.pivot(index="value", columns="class", values="mean_alignment").sort_index()
    count = rows.pivot(index="value", columns="class", values="count").reindex_like(mean).fillna(0).astype(int)
    return {"mean": mean, "count": count, "low": count < low_count}


def cell_key(cell: dict) -> str:
    return f"{cell['class']} with {cell['attribute']} = {cell['value']}"


def cell_ids(data: Dataset, train_ids: np.ndarray, cell: dict) -> np.ndarray:
    """Training example ids in a (class, attribute = value) cell."""
    meta = data.metadata.iloc[train_ids]
    cls = data.class_names.index(cell["class"])
    mask = (meta[cell["attribute"]].astype(str).to_numpy() == str(cell["value"])) & (data.labels[train_ids] == cls)
    return train_ids[mask]


def histogram(values: np.ndarray, colors: np.ndarray, bins: int = 40) -> pd.DataFrame:
    """Counts per (bin, colour) over shared bins, so a chart sends bins rather than every example.

    Columns: colour, left, right, center, width, count (empty bins included).
    """
    values, colors = np.asarray(values, np.float64), np.asarray(colors)
    edges = np.histogram_bin_edges(values, bins=bins)
    frames = []
    for c in pd.unique(colors):
        counts, _ = np.histogram(values[colors == c], bins=edges)
        frames.append(pd.DataFrame({"colour": c, "left": edges[:-1], "right": edges[1:],
                                    "center": (edges[:-1] + edges[1:]) / 2, "width": np.diff(edges),
                                    "count": counts}))
    return pd.concat(frames, ignore_index=True)
