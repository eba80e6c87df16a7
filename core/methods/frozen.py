"""What the methods that work on the analysis's frozen ERM model share (DFR, FFW, BA-LoRA)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.train.checkpoints import load_checkpoint
from core.methods.base import MethodContext
from core.data.images import to_tensor
from core.train.training import eval_batch_size


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
