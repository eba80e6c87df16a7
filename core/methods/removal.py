"""Shared by every removal method: drop training examples, retrain with the ERM recipe.

The retrained model keeps the ERM run's optimizer-step budget: fewer examples
for the same epochs would mean fewer steps and an undertrained model (shared/notes/d3m.md).
"""
from __future__ import annotations

import numpy as np

from core.runs import stages
from core.train.checkpoints import load_checkpoint, save_checkpoint
from core.train.training import Trained, fit
from core.methods.base import MethodContext, MethodResult
from core.progress import scaled
from core.methods.selection import default_k, most_negative


def retrain_without(ctx: MethodContext, removed: np.ndarray, params: dict, prefix: str = "") -> Trained:
    """Train a fresh model on train minus `removed` (positions) with the run's recipe."""
    keep = np.setdiff1d(np.arange(len(ctx.train_idx)), removed)
    if len(keep) == 0:
        raise ValueError("every training example would be removed: choose a smaller k")
    return fit(ctx.data, ctx.train_idx[keep], ctx.cfg, ctx.recipe(params), ctx.device,
               scaled(ctx.report, prefix + "retrained model: "))


def sweep_point(ctx: MethodContext, align: np.ndarray, k: int, params: dict, groups: np.ndarray,
                names: list[str], prefix: str) -> tuple[Trained, float]:
    """One retrain of a k sweep and its validation WGA on `groups`. With the debias run at hand
    (ctx.run) each is a stage: its checkpoint (sweep/model_k<k>.pt) and marker, so a resumed
    run (a killed worker, a study started again) redoes only the retrains not finished."""
    name, run = f"sweep_k{k}", ctx.run
    if run is not None and stages.is_done(run, name):
        info = stages.info(run, name)
        model = load_checkpoint(run.file(f"sweep/model_k{k}.pt"), ctx.device)
        return Trained(model, info["steps"], info["seconds"]), info["val_wga"]
    trained = retrain_without(ctx, most_negative(align, k), params, prefix)
    wga = ctx.val_wga(trained.model, groups, names)
    if run is not None:
        save_checkpoint(run.file(f"sweep/model_k{k}.pt"), trained.model, ctx.cfg)
        stages.mark_done(run, name, {"val_wga": wga, "steps": trained.steps, "seconds": trained.seconds})
    return trained, wga


def remove_by_score(ctx: MethodContext, params: dict, align: np.ndarray, sel_groups: np.ndarray,
                    sel_names: list[str]) -> MethodResult:
    """Remove the k most negative scores and retrain.

    k: params["k"], else the best of params["k_sweep"] by validation worst-group accuracy on
    `sel_groups` (true or pseudo groups: whatever the method is allowed to see), else the
    number of negative scores.
    """
    sweep = [int(k) for k in params.get("k_sweep") or []]
    k = params.get("k")
    info = {"default_k": default_k(align)}
    if k is None and sweep:
        curve = []
        best = None
        for i, k_i in enumerate(sweep):
            trained, wga = sweep_point(ctx, align, k_i, params, sel_groups, sel_names,
                                       f"sweep {i + 1}/{len(sweep)} (k={k_i}): ")
            curve.append({"k": k_i, "val_wga": wga})
            if best is None or wga > best[1]:
                best = (k_i, wga, trained)
        k, _, trained = best
        info.update(sweep=curve, selected_k=k, selected_by="validation worst-group accuracy")
        return MethodResult(trained.model, most_negative(align, k), trained.steps, info)
    k = info["default_k"] if k is None else int(k)
    info["selected_k"] = k
    info["selected_by"] = "given k" if params.get("k") is not None else "all negative scores (A_i < 0)"
    removed = most_negative(align, k)
    trained = retrain_without(ctx, removed, params)
    return MethodResult(trained.model, removed, trained.steps, info)
