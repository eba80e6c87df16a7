"""Distributions a person can read at any size: histograms whose bins cover the bulk with the
tails counted and labelled, a unit that makes tiny scores readable, percentiles beside raw
values, and plots down-sampled with their extremes kept.

A_i is heavy-tailed: at 50,000 training examples its values run from -7e-5 to 5e-5 while most
lie within a few 1e-7, so 60 linear bins over the full range put nearly everything in one bar.
`histogram(..., tail=0.005)` spreads the bins over the 0.5%-99.5% quantile range instead and
counts what lies outside in one extra bar at each end, labelled with its count and range.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def histogram(values: np.ndarray, colors: np.ndarray, bins: int = 40, tail: float = 0.0) -> pd.DataFrame:
    """Counts per (bin, colour) over shared bins, so a chart sends bins rather than every example.

    With `tail` > 0 the `bins` equal bins span the [tail, 1 - tail] quantiles of `values`, and
    the values below / above that range are counted in one extra bin at each end (`side`
    'below' / 'above', drawn one bin width outside the range; `left`/`right` then give the
    true range of the values it counts). Columns: colour, side ('' | 'below' | 'above'),
    left, right, center, width, count (empty bins included).
    """
    values, colors = np.asarray(values, np.float64), np.asarray(colors)
    lo, hi = (np.quantile(values, [tail, 1 - tail]) if tail > 0 and len(values) else (None, None))
    if lo is None or not lo < hi:
        lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    edges = np.histogram_bin_edges(values, bins=bins, range=(lo, hi))
    width = edges[1] - edges[0]
    frames = []
    for c in pd.unique(colors):
        v = values[colors == c]
        inside = v[(v >= lo) & (v <= hi)]
        counts, _ = np.histogram(inside, bins=edges)
        part = pd.DataFrame({"colour": c, "side": "", "left": edges[:-1], "right": edges[1:],
                             "center": (edges[:-1] + edges[1:]) / 2, "width": np.diff(edges), "count": counts})
        below, above = v[v < lo], v[v > hi]
        extra = [{"colour": c, "side": "below", "left": values.min(), "right": lo, "center": lo - width / 2,
                  "width": width, "count": len(below)},
                 {"colour": c, "side": "above", "left": hi, "right": values.max(), "center": hi + width / 2,
                  "width": width, "count": len(above)}] if tail > 0 else []
        frames.append(pd.concat([pd.DataFrame(extra[:1]), part, pd.DataFrame(extra[1:])], ignore_index=True)
                      if extra else part)
    out = pd.concat(frames, ignore_index=True)
    out["count"] = out["count"].astype(np.int64)
    return out


def tail_counts(hist: pd.DataFrame) -> dict[str, dict]:
    """Per side ('below', 'above') of a clipped histogram: examples counted and their range."""
    out = {}
    for side in ("below", "above"):
        part = hist[hist["side"] == side]
        if len(part):
            out[side] = {"count": int(part["count"].sum()), "left": float(part["left"].iloc[0]),
                         "right": float(part["right"].iloc[0])}
    return out


def unit(values: np.ndarray) -> tuple[float, str]:
    """A power of ten that brings the bulk of `values` (99th percentile of |value|) into
    [1, 1000), and its label: (1e9, "×10⁻⁹") for scores of a few 1e-7; (1.0, "") when the
    values are already in that range or all zero."""
    values = np.abs(np.asarray(values, np.float64))
    big = float(np.quantile(values, 0.99)) if len(values) else 0.0
    if big == 0.0 or not math.isfinite(big):
        return 1.0, ""
    exponent = 3 * math.floor(math.log10(big) / 3)
    if exponent == 0:
        return 1.0, ""
    return 10.0 ** -exponent, "×10" + str(exponent).translate(SUPERSCRIPT)


def percentiles(values: np.ndarray) -> np.ndarray:
    """Each value's percentile rank in 0..100 (0: the lowest; ties share their mean rank)."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n <= 1:
        return np.zeros(n)
    ranks = pd.Series(values).rank(method="average").to_numpy()
    return 100.0 * (ranks - 1) / (n - 1)


def percentile_range(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The values at two percentiles (0..100) of `values`: what a percentile filter keeps."""
    if not 0 <= low <= high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low <= high <= 100, got {low} and {high}")
    lo, hi = np.quantile(np.asarray(values, np.float64), [low / 100, high / 100])
    return float(lo), float(hi)


def downsample(values: np.ndarray, max_points: int, extremes: int) -> np.ndarray:
    """Positions of at most `max_points` of `values` for a scatter plot: the `extremes` lowest
    and the `extremes` highest, and the rest of the budget evenly spaced in rank between
    them (so the plot keeps both tails and the shape of the bulk). Sorted by value."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    n = len(order)
    if n <= max_points:
        return order
    extremes = min(extremes, max_points // 2)
    middle = order[extremes:n - extremes]
    budget = max_points - 2 * extremes
    picks = middle[np.linspace(0, len(middle) - 1, budget).round().astype(np.int64)] if budget > 0 else middle[:0]
    return np.concatenate([order[:extremes], picks, order[n - extremes:]])
