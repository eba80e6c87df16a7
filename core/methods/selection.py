"""From TRAK scores to removal sets: group alignment (equation 3), the k rules, Auto-D3M's
pseudo-groups and the subpopulation table (seeds/001 sections 4-5).

Scores come as core/attribution/scores.py's `Scores` (an analysis's factors, or a dense
matrix: arrays are wrapped), and only their products are used, so nothing here is ever
validation x train in size."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from core.attribution.scores import Scores, as_scores

from core.train.metrics import group_mean
from core.train.losses import cross_entropy_np


def group_losses(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """ℓ_g: the base model's mean cross-entropy on the validation examples of each group."""
    return group_mean(cross_entropy_np(logits, labels), groups, n_groups)


def group_scores(scores: Scores | np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """τ(G)_i = mean of τ(z)_i over validation examples z in group G; (n_groups, n_train),
    NaN rows for groups without validation examples."""
    return as_scores(scores).group_means(np.asarray(groups), n_groups)


def alignment(scores: Scores | np.ndarray, groups: np.ndarray, losses: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """Equation 3: A_i = Σ_g exp(β ℓ_g) τ(g)_i / Σ_g exp(β ℓ_g).

    Groups with no validation example (NaN loss) are left out. A negative A_i means that
    training on example i lowers the margins of the high-loss groups.
    """
    present = ~np.isnan(losses)
    tau = group_scores(scores, groups, len(losses))[present]
    logw = beta * losses[present]
    w = np.exp(logw - logw.max())  # softmax weights, shift-invariant
    return (w[:, None] * tau).sum(axis=0) / w.sum()


def default_k(align: np.ndarray) -> int:
    """The paper's heuristic: remove every example with negative alignment."""
    return int((align < 0).sum())


def parse_k_sweep(text: str) -> list[int]:
    """'50, 100, 200' -> [50, 100, 200]; blank -> []; anything else is an error naming it."""
    ks = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(f"k sweep: {part!r} is not a whole number (write e.g. 50, 100, 200)")
        ks.append(int(part))
    return sorted(set(ks))


def most_negative(align: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k most negative A_i (ties broken by position, so it is repeatable)."""
    if not 0 <= k <= len(align):
        raise ValueError(f"k = {k} is outside 0..{len(align)} (the number of training examples)")
    return np.sort(np.argsort(align, kind="stable")[:k])


@dataclass
class PseudoGroups:
    """Auto-D3M's split of each class's validation examples along the top principal component."""

    groups: np.ndarray  # per val example: 2c for the lower-performing 35% side of class c, 2c+1 for the rest
    projection: np.ndarray  # per val example: coordinate on its class's oriented component
    thresholds: dict  # class index -> projection value at the split
    names: list[str]  # one name per pseudo-group id


def pseudo_groups(scores: Scores | np.ndarray, labels: np.ndarray, losses: np.ndarray, class_names: list[str],
                  fraction: float = 0.35) -> PseudoGroups:
    """Per class: project the validation attribution rows on their top principal component,
    orient it so the `fraction` lower tail has the higher mean validation loss (no group
    labels needed), and split there (seeds/001 section 4, footnote 2). The component's sign
    is first fixed (largest |coordinate| positive), so that a tie of the two tails' losses
    splits factored and dense scores alike."""
    scores = as_scores(scores)
    groups = np.zeros(len(labels), np.int64)
    proj = np.zeros(len(labels), np.float64)
    thresholds = {}
    for c in range(len(class_names)):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            groups[rows], thresholds[c] = 2 * c, float("nan")
            continue
        p = scores.class_projection(rows)
        p = p if p[np.argmax(np.abs(p))] >= 0 else -p
        n_low = max(1, math.ceil(fraction * len(rows)))
        order = np.argsort(p, kind="stable")
        if losses[rows[order[-n_low:]]].mean() > losses[rows[order[:n_low]]].mean():
            p, order = -p, np.argsort(-p, kind="stable")
        low = np.zeros(len(rows), bool)
        low[order[:n_low]] = True
        groups[rows] = np.where(low, 2 * c, 2 * c + 1)
        proj[rows] = p
        thresholds[c] = float(p[order[n_low - 1]])
    names = [f"{name}: {side}" for name in class_names for side in ("low side (35%)", "high side")]
    return PseudoGroups(groups, proj, thresholds, names)


def pseudo_group_match(pseudo: np.ndarray, true_groups: np.ndarray, labels: np.ndarray,
                       pseudo_names: list[str], true_names: list[str]) -> dict:
    """How well pseudo-groups recover the true groups: adjusted Rand index per class and a
    contingency table (pseudo-group x true group counts)."""
    per_class = {}
    for c in np.unique(labels):
        m = labels == c
        per_class[int(c)] = float(adjusted_rand_score(true_groups[m], pseudo[m]))
    table = pd.crosstab(pd.Series([pseudo_names[g] for g in pseudo], name="pseudo_group"),
                        pd.Series([true_names[g] for g in true_groups], name="true_group"))
    return {"ari_overall": float(adjusted_rand_score(true_groups, pseudo)), "ari_per_class": per_class,
            "contingency": table.to_dict(orient="index")}


def subpopulations(align: np.ndarray, labels: np.ndarray, metadata: pd.DataFrame, attributes: list[str],
                   class_names: list[str]) -> pd.DataFrame:
    """Mean A_i and count per (class, attribute value) for every attribute (Figure 3-4)."""
    frames = []
    base = pd.DataFrame({"class": [class_names[c] for c in labels], "alignment": align})
    for attr in attributes:
        df = base.assign(attribute=attr, value=metadata[attr].astype(str).to_numpy())
        frames.append(df.groupby(["attribute", "value", "class"], as_index=False)
                      .agg(mean_alignment=("alignment", "mean"), count=("alignment", "size")))
    cols = ["attribute", "value", "class", "mean_alignment", "count"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols].sort_values("mean_alignment", ignore_index=True)
