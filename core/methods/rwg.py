"""RWG (Idrissi et al. 2022; seeds/001 appendix B.1): ERM on batches drawn with replacement so
that every training group is equally likely; the dataset size (an epoch) is unchanged, small
groups are upsampled and large ones downsampled.

Nothing is removed. The model keeps the ERM step budget and the epoch is chosen by
validation worst-group accuracy (core/methods/selection_by_val.py).

Params: seed (default the analysis's), lr, weight_decay (optional overrides).
"""
from __future__ import annotations

import numpy as np

from core.methods.base import MethodContext, MethodResult, register
from core.methods.selection_by_val import fit_selected


def group_balanced_probs(groups: np.ndarray) -> np.ndarray:
    """Per-example sampling probabilities giving each present group the same total mass."""
    present, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / (len(present) * counts[inverse])


@register("rwg", "RWG (group-balanced resampling)", group_info="yes/yes", removes=False)
def rwg(ctx: MethodContext, params: dict) -> MethodResult:
    groups = ctx.data.groups[ctx.train_idx]
    probs = group_balanced_probs(groups)
    model, steps, info = fit_selected(ctx, ctx.train_idx, params, "RWG: ", sample_probs=probs)
    uniform = 1.0 / len(groups)
    info["n_reweighted"] = int((~np.isclose(probs, uniform)).sum())
    info["group_weights"] = {ctx.data.group_names[g]: float(probs[groups == g][0] / uniform)
                             for g in np.unique(groups)}
    return MethodResult(model, np.zeros(0, np.int64), steps, info)
