"""What the Extremes, Alignment and Subpopulations pages show, as plain data (read only:
the user's choices are written by core/runs/annotations.py)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from core.attribution.factors import open_scores
from core.data import categories
from core.data.dataset import Dataset
from core.methods.selection import default_k
from core.runs.store import Run
from core.views.data import persisted
from core.views.distributions import percentiles

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
    """One row per training example: id, class, group, attributes, its score (A_i) and the
    score's percentile among the training examples (0: the most negative)."""
    scores = np.asarray(scores, np.float64)
    return data.frame(train_ids).drop(columns="filename").assign(alignment=scores, percentile=percentiles(scores))


def filter_mask(table: pd.DataFrame, classes: Iterable[str] | None = None,
                attribute_values: dict[str, Iterable[str]] | None = None,
                percentile_range: tuple[float, float] | None = None) -> np.ndarray:
    """Which rows are of the class(es), attribute values and A_i percentile range chosen
    (empty choice: all); classes and values are matched by name (0 and "0" alike)."""
    mask = np.ones(len(table), bool)
    if classes:
        mask &= table["class"].isin(categories.names(classes)).to_numpy()
    for attr, values in (attribute_values or {}).items():
        if values:
            mask &= table[attr].isin(categories.names(values)).to_numpy()
    if percentile_range is not None:
        lo, hi = percentile_range
        mask &= table["percentile"].between(lo, hi).to_numpy()
    return mask


def influential_examples(data: Dataset, analysis: Run, val_id: int, n: int = 10) -> pd.DataFrame:
    """The training examples with the largest |τ(z)_i| for one validation example z: the n most
    positive (training on them raises z's margin: "helps") and the n most negative ("hurts"),
    from one row of the analysis's scores computed on demand (never the whole matrix).

    Columns: id, influence (τ), effect, class, group and every attribute; helps first, each
    side from the strongest."""
    val_ids, train_ids = analysis.read_array("val_ids"), analysis.read_array("train_ids")
    where = np.flatnonzero(val_ids == val_id)
    if len(where) == 0:
        raise ValueError(f"example {val_id} is not a validation example of analysis {analysis.id}")
    row = open_scores(analysis.path).row(int(where[0]))
    order = np.argsort(row, kind="stable")
    n = min(n, len(row))
    picks = np.concatenate([order[::-1][:n], order[:n]])
    effect = ["helps"] * n + ["hurts"] * n
    frame = data.frame(train_ids[picks]).drop(columns="filename")
    frame.insert(1, "influence", row[picks])
    frame.insert(2, "effect", effect)
    return frame.reset_index(drop=True)


def filter_examples(table: pd.DataFrame, classes: Iterable[str] | None = None,
                    attribute_values: dict[str, Iterable[str]] | None = None,
                    percentile_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """The rows filter_mask keeps."""
    return table[filter_mask(table, classes, attribute_values, percentile_range)]


def n_pages(n_rows: int, page_size: int) -> int:
    return max(1, math.ceil(n_rows / page_size))


def sort_order(table: pd.DataFrame, sort_by: str, ascending: bool) -> np.ndarray:
    """Row positions of the table sorted by one column (ties by id); categories in the table's
    order (numeric when all are integers). Compute once per table and column, then page with it."""
    column = table[sort_by]
    if not pd.api.types.is_numeric_dtype(column):
        rank = {v: i for i, v in enumerate(categories.order(column.unique()))}
        column = column.map(rank)
    key = column.to_numpy(np.float64)
    return np.lexsort((table["id"].to_numpy(), key if ascending else -key))


def sorted_page(table: pd.DataFrame, sort_by: str, ascending: bool, page: int, page_size: int,
                order: np.ndarray | None = None, mask: np.ndarray | None = None) -> pd.DataFrame:
    """Page `page` (1-based) of the rows of `table` under `mask` (default: all), sorted by one
    column (ties by id); `order` is sort_order(table, sort_by, ascending) when already known."""
    order = sort_order(table, sort_by, ascending) if order is None else order
    if mask is not None:
        order = order[np.asarray(mask, bool)[order]]
    if page < 1 or page > n_pages(len(order), page_size):
        raise ValueError(f"page {page} is outside 1..{n_pages(len(order), page_size)}")
    return table.iloc[order[(page - 1) * page_size: page * page_size]]


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


def heatmap(subpop: pd.DataFrame, attribute: str, low_count: int = LOW_COUNT,
            class_names: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Attribute value x class tables of mean A_i, counts, and which cells count < low_count.
    Values and classes are names, in the table's order (classes in `class_names`' order)."""
    rows = categories.as_text(subpop, ("attribute", "value", "class"))
    rows = rows[rows["attribute"] == categories.name(attribute)]
    if rows.empty:
        raise ValueError(f"no subpopulations for attribute {attribute!r}")
    present = set(rows["class"])
    classes = [c for c in class_names if c in present] if class_names else categories.order(present)
    mean = rows.pivot(index="value", columns="class", values="mean_alignment")
    mean = mean.reindex(index=categories.order(mean.index), columns=classes)
    count = rows.pivot(index="value", columns="class", values="count").reindex_like(mean).fillna(0).astype(int)
    return {"mean": mean, "count": count, "low": count < low_count}


def cell_key(cell: dict) -> str:
    c = categories.cell(cell["attribute"], cell["value"], cell["class"])
    return f"{c['class']} with {c['attribute']} = {c['value']}"


def cells_of(hm: dict[str, pd.DataFrame], attribute: str) -> list[dict]:
    """The non-empty cells of a heatmap (as names), most negative mean A_i first."""
    mean, count = hm["mean"], hm["count"]
    cells = [(mean.loc[v, c], categories.cell(attribute, v, c)) for v in mean.index for c in mean.columns
             if count.loc[v, c] > 0]
    return [cell for _, cell in sorted(cells, key=lambda x: x[0])]


def cell_ids(data: Dataset, train_ids: np.ndarray, cell: dict) -> np.ndarray:
    """Training example ids in a (class, attribute = value) cell (matched by name)."""
    train_ids = np.asarray(train_ids, np.int64)
    return train_ids[data.in_cell(train_ids, cell)]
