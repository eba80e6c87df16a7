"""What the methods that work on the analysis's frozen ERM model share (FFW, BA-LoRA)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.checkpoints import load_checkpoint
from core.methods.base import MethodContext
from core.methods.dfr import last_linear


def load_erm(ctx: MethodContext) -> nn.Module:
    """The analysis's ERM model (erm/model.pt; trained from the user's --weights when given),
    in eval mode with every parameter frozen."""
    model = load_checkpoint(ctx.analysis.file("erm/model.pt"), ctx.device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class AlwaysEval(nn.Module):
    """A module that stays in eval mode when core.training.train calls .train(): the frozen
    model inside keeps its batch-norm statistics (buffers) bit-identical and its examples
    independent, while the trainable part (gates, adapters) still gets its gradients."""

    def train(self, mode: bool = True) -> "AlwaysEval":
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
