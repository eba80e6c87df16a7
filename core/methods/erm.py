"""ERM: the same recipe on all training data (another seed of the analysis's base model)."""
from __future__ import annotations

import numpy as np

from core.methods.base import BASELINE, MethodContext, MethodResult, register
from core.methods.removal import retrain_without


@register(BASELINE, "ERM", group_info="no/no", removes=False)
def erm(ctx: MethodContext, params: dict) -> MethodResult:
    trained = retrain_without(ctx, np.zeros(0, np.int64), params)
    return MethodResult(trained.model, np.zeros(0, np.int64), trained.steps, {"selected_by": "last step"})
