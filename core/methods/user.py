"""Removal sets chosen by the user in the dashboard: flagged examples, excluded subpopulations."""
from __future__ import annotations

import numpy as np

from core.methods.base import MethodContext, MethodResult, register
from core.methods.removal import retrain_without


def positions_of_ids(ctx: MethodContext, ids: list[int]) -> np.ndarray:
    """Train-split positions of example ids (row numbers of metadata.csv, 0-based)."""
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(ctx.train_idx, ids)
    bad = ids[(pos >= len(ctx.train_idx)) | (ctx.train_idx[np.minimum(pos, len(ctx.train_idx) - 1)] != ids)]
    if len(bad):
        raise ValueError(f"example ids {bad[:5].tolist()} are not training examples")
    return np.unique(pos)


@register("flagged", "Flagged examples", group_info="no/yes", needs="flagged")
def flagged(ctx: MethodContext, params: dict) -> MethodResult:
    removed = positions_of_ids(ctx, params.get("ids") or [])
    trained = retrain_without(ctx, removed, params)
    return MethodResult(trained.model, removed, trained.steps, {"selected_by": "flagged by the user"})


@register("subpopulations", "Excluded subpopulations", group_info="no/yes", needs="cells")
def subpopulations(ctx: MethodContext, params: dict) -> MethodResult:
    """Remove every training example in the chosen (class, attribute = value) cells."""
    mask = np.zeros(len(ctx.train_idx), bool)
    for cell in params.get("cells") or []:
        mask |= ctx.data.in_cell(ctx.train_idx, cell)  # matched by name: class 0 and "0" alike
    removed = np.flatnonzero(mask)
    trained = retrain_without(ctx, removed, params)
    return MethodResult(trained.model, removed, trained.steps, {"selected_by": "excluded subpopulations",
                                                                "cells": params.get("cells") or []})
