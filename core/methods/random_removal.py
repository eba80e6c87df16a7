"""The control: remove k training examples chosen uniformly at random, then retrain."""
from __future__ import annotations

import numpy as np

from core.methods.base import CONTROL, MethodContext, MethodResult, register
from core.methods.removal import retrain_without


@register(CONTROL, "Random removal (control)", group_info="no/no", needs="k")
def random_removal(ctx: MethodContext, params: dict) -> MethodResult:
    if params.get("k") is None:
        raise ValueError("random removal needs k (the number of examples to remove)")
    k, seed = int(params["k"]), int(params.get("seed", ctx.cfg.train.seed))
    n = len(ctx.train_idx)
    if not 0 <= k <= n:
        raise ValueError(f"k = {k} is outside 0..{n} (the number of training examples)")
    removed = np.sort(np.random.default_rng(10_000 + seed).choice(n, k, replace=False))
    trained = retrain_without(ctx, removed, params)
    return MethodResult(trained.model, removed, trained.steps, {"selected_k": k, "selected_by": "same k as the run it controls"})
