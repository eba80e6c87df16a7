"""GroupDRO (Sagawa et al. 2020; seeds/001 appendix B.1): minimise the worst-case group loss
with online group weights.

Each step: ℓ_g = mean cross-entropy of the batch's examples in group g; the weights update as
q_g ← q_g · exp(η ℓ_g), then renormalise (Sagawa et al., Algorithm 1); the loss is Σ_g q_g ℓ_g.
Groups absent from a batch have ℓ_g = 0 and keep their unnormalised weight. The model keeps
the ERM step budget and picks its epoch by validation worst-group accuracy
(core/methods/selection_by_val.py).

Params: seed, eta (step size η, default 0.01 as in Sagawa et al.), lr, weight_decay.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from core.methods.base import MethodContext, MethodResult, register
from core.methods.options import Option
from core.methods.selection_by_val import fit_selected


def exponentiated_step(q: torch.Tensor, group_loss: torch.Tensor, eta: float) -> torch.Tensor:
    """One update of the group weights: q_g ← q_g · exp(η ℓ_g), renormalised to sum to 1."""
    q = q * torch.exp(eta * group_loss)
    return q / q.sum()


class GroupDROLoss:
    """A train(..., loss_fn=...) holding the online group weights q (float64, on CPU)."""

    def __init__(self, groups: np.ndarray, n_groups: int, eta: float):
        self.groups = torch.tensor(np.array(groups), dtype=torch.int64)  # by example id
        self.n_groups, self.eta = n_groups, float(eta)
        self.q = torch.full((n_groups,), 1.0 / n_groups, dtype=torch.float64)

    def group_losses(self, logits: torch.Tensor, y: torch.Tensor, batch_ids: np.ndarray) -> torch.Tensor:
        g = self.groups[torch.as_tensor(np.asarray(batch_ids))].to(logits.device)
        losses = F.cross_entropy(logits, y, reduction="none")
        sums = torch.zeros(self.n_groups, device=logits.device, dtype=losses.dtype).index_add(0, g, losses)
        return sums / torch.bincount(g, minlength=self.n_groups).clamp(min=1)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, batch_ids: np.ndarray) -> torch.Tensor:
        group_loss = self.group_losses(logits, y, batch_ids)
        self.q = exponentiated_step(self.q, group_loss.detach().double().cpu(), self.eta)
        return (self.q.to(logits.device, logits.dtype) * group_loss).sum()


@register("groupdro", "GroupDRO", group_info="yes/yes", removes=False, options={
    "eta": Option(0.01, ge=0, help="step size η of the group weights (Sagawa et al.: 0.01)")})
def groupdro(ctx: MethodContext, params: dict) -> MethodResult:
    loss = GroupDROLoss(ctx.data.groups, ctx.data.n_groups, params["eta"])
    model, steps, info = fit_selected(ctx, ctx.train_idx, params, "GroupDRO: ", loss_fn=loss)
    info.update(eta=loss.eta, n_reweighted=int(len(ctx.train_idx)),
                final_group_weights=dict(zip(ctx.data.group_names, loss.q.tolist())))
    return MethodResult(model, np.zeros(0, np.int64), steps, info)
