"""Epoch selection for the re-weighting baselines (RWG, SUBG, JTT, GroupDRO).

Appendix B.2 of seeds/001: these methods early-stop at the epoch with the highest validation
worst-group accuracy (on the true validation groups: all four use val group labels, Table 1).
`EpochSelector` is the `train(..., on_epoch=...)` hook doing that: it evaluates the model after
every epoch and keeps a deep copy of the best state; `fit_selected` trains with it and returns
the selected model with a record of what was chosen and why.

Shared params of every re-weighting method (besides its own):
  seed          training seed (default: the analysis's)
  lr, weight_decay  optimizer overrides (the paper tunes re-weighting methods separately,
                e.g. Waterbirds lr 1e-5, weight decay 0.1); default: the analysis's recipe
Training budget: the analysis's ERM optimizer-step budget (ctx.erm_steps).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from torch import nn

from core.train.training import fit
from core.methods.base import MethodContext
from core.progress import scaled

SELECTED_BY = "validation worst-group accuracy"


@dataclass
class EpochSelector:
    """on_epoch hook: score the model after each epoch, keep the best (first on ties)."""

    evaluate: Callable[[nn.Module], float]
    curve: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    best_epoch: float | None = None
    best_score: float = -math.inf
    best_key: tuple = ()

    def __call__(self, epoch: int, model: nn.Module) -> None:
        self.record(epoch + 1, model)  # epochs counted from 1: "after epoch 3"

    def record(self, epoch: float, model: nn.Module) -> None:
        """`evaluate` returns the validation WGA, or (WGA, average accuracy): then the average
        accuracy breaks WGA ties (many small groups make WGA ties common)."""
        raw = self.evaluate(model)
        key = tuple(float(v) for v in raw) if isinstance(raw, tuple) else (float(raw),)
        entry = {"epoch": epoch, "val_wga": key[0]}
        if len(key) > 1:
            entry["val_acc"] = key[1]
        self.curve.append(entry)
        if self.best_state is None or key > self.best_key:
            self.best_state = copy.deepcopy(model.state_dict())
            self.best_epoch, self.best_score, self.best_key = epoch, key[0], key

    def info(self) -> dict:
        return {"selected_epoch": self.best_epoch, "selected_by": SELECTED_BY,
                "selected_val_wga": self.best_score, "epoch_val_wga": self.curve}


def fit_selected(ctx: MethodContext, idx: np.ndarray, params: dict, prefix: str = "",
                 **hooks) -> tuple[nn.Module, int, dict]:
    """Train a fresh model on example ids `idx` (hooks: sample_probs, loss_fn) and return
    the state of its best epoch by validation WGA, the steps taken and the selection info.

    When the step budget ends inside an epoch, the final model is a candidate too."""
    cfg = ctx.recipe(params)
    selector = EpochSelector(ctx.val_wga)
    trained = fit(ctx.data, idx, ctx.cfg, cfg, ctx.device, scaled(ctx.report, prefix),
                  on_epoch=selector, **hooks)
    keep_best(selector, trained.model, trained.steps, math.ceil(len(idx) / cfg.batch_size))
    return trained.model.eval(), trained.steps, selector.info()


def keep_best(selector: EpochSelector, model: nn.Module, steps: int, per_epoch: int) -> None:
    """Load the selector's best state into `model` after training; when the step budget ended
    inside an epoch (or before the first one), the final model is a candidate too."""
    if steps % per_epoch or not selector.curve:
        selector.record(round(steps / per_epoch, 2), model)
    model.load_state_dict(selector.best_state)
