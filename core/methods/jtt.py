"""JTT, Just Train Twice (Liu et al. 2021; seeds/001 appendix B.1).

Stage 1: a short ERM run (the identification model) on all training data. Stage 2: a fresh
model trained with the examples stage 1 misclassifies upweighted by `upweight`. Upweighting
is done by upsampling: batches are drawn with replacement with probability proportional to
the weight (1, or `upweight` for an error), which is JTT's upsampled dataset in expectation.
Stage 2 keeps the ERM step budget and picks its epoch by validation worst-group accuracy
(core/methods/selection_by_val.py): train group labels are never used (no/yes).

Params:
  seed          both stages (default the analysis's)
  first_epochs  stage-1 epochs (default 2; JTT used about a fifth of the full run on
                Waterbirds and 1 epoch on CelebA)
  upweight      λ_up, the weight of stage-1 errors (default 20; JTT used 100 / 50)
  lr, weight_decay  optional overrides for both stages
"""
from __future__ import annotations

import math

import numpy as np

from core.train.training import fit
from core.methods.base import MethodContext, MethodResult, register
from core.methods.options import Option
from core.methods.selection_by_val import fit_selected
from core.progress import scaled
from core.train.training import predict_logits


def upsample_probs(errors: np.ndarray, upweight: float) -> np.ndarray:
    """Sampling probabilities: `upweight` times higher for the positions where errors is True."""
    weights = np.where(errors, float(upweight), 1.0)
    return weights / weights.sum()


@register("jtt", "JTT (Just Train Twice)", group_info="no/yes", removes=False,
          options={"first_epochs": Option(2, ge=1, help="epochs of the stage-1 identification model"),
                   "upweight": Option(20.0, ge=1, help="λ_up: how much more often stage-1 errors are drawn")})
def jtt(ctx: MethodContext, params: dict) -> MethodResult:
    first_epochs, upweight = params["first_epochs"], params["upweight"]
    idx = ctx.train_idx
    first_steps = first_epochs * math.ceil(len(idx) / ctx.cfg.train.batch_size)
    stage1 = fit(ctx.data, idx, ctx.cfg, ctx.recipe(params, steps=first_steps), ctx.device,
                 scaled(ctx.report, "JTT stage 1: "))
    errors = predict_logits(stage1.model, ctx.data.images, idx, ctx.device).argmax(1) != ctx.data.labels[idx]
    model, steps, info = fit_selected(ctx, idx, params, "JTT stage 2: ",
                                      sample_probs=upsample_probs(errors, upweight))
    info.update(first_epochs=first_epochs, upweight=upweight, n_reweighted=int(errors.sum()),
                first_stage_train_acc=float(1 - errors.mean()))
    return MethodResult(model, np.zeros(0, np.int64), steps, info)
