"""What the methods that work on the analysis's frozen ERM model share (DFR, FFW, BA-LoRA)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.data.images import to_tensor
from core.train.training import eval_batch_size
from core.methods.base import MethodContext
from core.train.checkpoints import load_checkpoint


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def penultimate(model: nn.Module, images: np.ndarray, idx: np.ndarray, device: torch.device,
                batch_size: int | None = None) -> np.ndarray:
    """The inputs of the model's last linear layer for examples idx (eval mode), float64."""
    batch_size = batch_size or eval_batch_size(images.shape[1], device)
    feats: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(lambda m, inp, out: feats.append(inp[0].flatten(1).cpu()))
    try:
        model.eval().to(device)
        for i in range(0, len(idx), batch_size):
            model(to_tensor(images[idx[i:i + batch_size]], device))
    finally:
        hook.remove()
    return torch.cat(feats).double().numpy()


def load_erm(ctx: MethodContext) -> nn.Module:
    """The analysis's ERM model (erm/model.pt; trained from the user's --weights when given),
    in eval mode with every parameter frozen."""
    model = load_checkpoint(ctx.analysis.file("erm/model.pt"), ctx.device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class AlwaysEval(nn.Module):
    """A module that stays in eval mode when core.train.training.train calls .train(): the frozen
    model inside keeps its batch-norm statistics (buffers) bit-identical and its examples
    independent, while the trainable part (gates, adapters) still gets its gradients."""

    def train(self, mode: bool = True) -> AlwaysEval:
        return super().train(False)


class Penultimate:
    """A forward hook keeping the input of the model's last linear layer (the bottleneck
    features) from the latest forward pass, as `features` (B, d)."""

    def __init__(self, model: nn.Module):
        self.features: torch.Tensor | None = None
        self.handle = last_linear(model).register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        self.features = inp[0].flatten(1)


def labels_by_id(n: int, idx: np.ndarray, values: np.ndarray) -> torch.Tensor:
    """An int64 tensor of length n holding values[j] at example id idx[j] (-1 elsewhere), for
    loss functions that receive a batch's example ids."""
    out = torch.full((n,), -1, dtype=torch.int64)
    out[torch.as_tensor(idx)] = torch.as_tensor(np.asarray(values), dtype=torch.int64)
    return out


def val_fit_select(ctx: MethodContext, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation example ids split into a group-balanced fitting part and a selection part.

    Every validation group is shuffled and its first round(fraction · n_g) examples go to the
    fitting part; the fitting part is then balanced by keeping, from every group, as many as
    the smallest group has there (as DFR balances its fitting data); every other validation
    example (the rest of each group and what balancing left out) is the selection part. FFW's
    official code trains its gates and bias head on 60% of CelebA's validation set and keeps
    the other 40% for its choices (dataloaders.py:246-248); here that split is by group."""
    if not 0 < fraction < 1:
        raise ValueError(f"fit_fraction must be strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng(40_000 + seed)
    val = ctx.val_idx
    groups = ctx.data.groups[val]
    parts = {}
    for g in np.unique(groups):
        members = rng.permutation(val[groups == g])
        parts[g] = (members[:round(fraction * len(members))], members[round(fraction * len(members)):])
    smallest = min(len(fit) for fit, _ in parts.values())
    if smallest == 0:
        raise ValueError("a validation group is too small to give the fitting part an example "
                         f"(fit_fraction={fraction}); every group needs at least {int(np.ceil(0.5 / fraction))}")
    fit = np.sort(np.concatenate([f[:smallest] for f, _ in parts.values()]))
    select = np.sort(np.setdiff1d(val, fit))
    return fit, select


def val_groups_reason(data) -> str | None:
    """FFW and BA-LoRA fit on part of every validation group and choose on the rest: each
    validation group needs two examples."""
    val = data.idx("val")
    counts = np.bincount(data.groups[val], minlength=data.n_groups)
    present = counts[counts > 0]
    if len(present) == 0 or present.min() < 2:
        return "it needs at least two validation examples in every validation group (one to fit on, one to choose with)"
    return None
