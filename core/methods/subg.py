"""SUBG (Idrissi et al. 2022; seeds/001 appendix B.1): ERM on a random subset of the training
data in which every group is subsampled to the size of the smallest training group.

A removal method: MethodResult.removed holds the dropped train positions. The model keeps
the ERM run's optimizer-step budget (so it is not undertrained on the smaller set) and the
epoch is chosen by validation worst-group accuracy (core/methods/selection_by_val.py).

Params: seed (subsample and training; default the analysis's), lr, weight_decay (optional
overrides, see selection_by_val).
"""
from __future__ import annotations

import numpy as np

from core.data.dataset import Dataset
from core.methods.base import MethodContext, MethodResult, register
from core.methods.selection_by_val import fit_selected


def balanced_subsample(groups: np.ndarray, n_groups: int, rng: np.random.Generator,
                       names: list[str] | None = None) -> np.ndarray:
    """Sorted positions keeping min-group-size examples of every group (without replacement)."""
    counts = np.bincount(groups, minlength=n_groups)
    smallest = int(counts.min())
    if smallest == 0:
        empty = names[counts.argmin()] if names else int(counts.argmin())
        raise ValueError(f"group {empty!r} has no training examples, so subsampling every "
                         "group to the smallest would leave nothing")
    keep = [rng.choice(np.flatnonzero(groups == g), smallest, replace=False) for g in range(n_groups)]
    return np.sort(np.concatenate(keep))


def every_group_in_train(data: Dataset) -> str | None:
    """SUBG keeps min-group-size examples per group: a group with no training example leaves nothing."""
    counts = np.bincount(data.groups[data.idx("train")], minlength=data.n_groups)
    empty = [data.group_names[g] for g in np.flatnonzero(counts == 0)]
    return (f"it needs training examples in every group, and group {empty[0]!r} has none"
            + (f" (nor do {len(empty) - 1} more)" if len(empty) > 1 else "")) if empty else None


@register("subg", "SUBG (group-balanced subsample)", group_info="yes/yes", requires=every_group_in_train)
def subg(ctx: MethodContext, params: dict) -> MethodResult:
    seed = int(params.get("seed", ctx.cfg.train.seed))
    groups = ctx.data.groups[ctx.train_idx]
    keep = balanced_subsample(groups, ctx.data.n_groups, np.random.default_rng(20_000 + seed), ctx.data.group_names)
    removed = np.setdiff1d(np.arange(len(ctx.train_idx)), keep)
    model, steps, info = fit_selected(ctx, ctx.train_idx[keep], params, "SUBG: ")
    info["per_group_kept"] = int(len(keep) // ctx.data.n_groups)
    return MethodResult(model, removed, steps, info)
