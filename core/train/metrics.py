"""Accuracy metrics over groups: average, worst-group, balanced and per-group."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score


def group_metrics(preds: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                  group_names: list[str]) -> dict:
    """Metrics of predictions on one split.

    Worst-group accuracy is the minimum over the groups present in the split; balanced
    accuracy is the mean per-class recall (sklearn's balanced_accuracy_score); macro-F1 the
    unweighted mean over the classes present of each class's F1 (BA-LoRA's metric).
    """
    preds, labels, groups = np.asarray(preds), np.asarray(labels), np.asarray(groups)
    correct = preds == labels
    per_group, counts = {}, {}
    for g, name in enumerate(group_names):
        mask = groups == g
        if mask.any():
            per_group[name] = float(correct[mask].mean())
            counts[name] = int(mask.sum())
    worst = min(per_group, key=per_group.get) if per_group else None
    return {
        "acc": float(correct.mean()) if len(correct) else float("nan"),
        "wga": per_group[worst] if worst else float("nan"),
        "worst_group": worst,
        "balanced_acc": float(balanced_accuracy_score(labels, preds)) if len(labels) else float("nan"),
        "macro_f1": float(f1_score(labels, preds, labels=np.unique(labels), average="macro", zero_division=0))
        if len(labels) else float("nan"),
        "per_group": per_group,
        "group_counts": counts,
    }


def group_mean(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of `values` per group index (NaN for a group with no members)."""
    sums = np.bincount(groups, weights=values, minlength=n_groups)
    counts = np.bincount(groups, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
