"""The linear datamodeling score (LDS), TRAK's standard fidelity figure (shared/notes/d3m.md).

For random training subsets S (as 0/1 masks over the n train examples) and models actually
trained on each S: LDS = mean over targets z of the Spearman correlation, across subsets,
between the predicted Σ_{i∈S} τ(z)_i and the actual margin f(z; θ_S).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from core.attribution.scores import Scores, as_scores


def subset_masks(n: int, count: int, fraction: float, seed: int) -> np.ndarray:
    """`count` random subsets of round(fraction · n) train examples, as a bool (count, n) array."""
    rng = np.random.default_rng(seed)
    size = max(1, round(fraction * n))
    masks = np.zeros((count, n), bool)
    for row in masks:
        row[rng.choice(n, size, replace=False)] = True
    return masks


def lds_per_target(scores: Scores | np.ndarray, masks: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """Spearman correlation per target between predicted and actual subset margins.

    scores: τ as (targets m, train n), an array or an analysis's (factored) Scores;
    masks: (subsets s, n) bool; margins: (s, m) actual. Targets whose prediction or margin
    is constant over the subsets get NaN.
    """
    scores = as_scores(scores)
    if masks.shape[1] != scores.shape[1] or margins.shape != (masks.shape[0], scores.shape[0]):
        raise ValueError(f"LDS shapes disagree: scores {scores.shape}, masks {masks.shape}, margins {margins.shape}")
    if masks.shape[0] < 3:
        raise ValueError(f"LDS needs at least 3 subsets, got {masks.shape[0]}")
    predicted = scores.subset_sums(masks)  # (s, m)
    rp, ra = rankdata(predicted, axis=0), rankdata(margins, axis=0)
    rp, ra = rp - rp.mean(0), ra - ra.mean(0)
    denom = np.sqrt((rp**2).sum(0) * (ra**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rp * ra).sum(0) / np.where(denom > 0, denom, 1), np.nan)


def lds(scores: Scores | np.ndarray, masks: np.ndarray, margins: np.ndarray) -> float:
    """The mean of lds_per_target over targets with a defined correlation."""
    return float(np.nanmean(lds_per_target(scores, masks, margins)))
