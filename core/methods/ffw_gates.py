"""FFW's parts (Nahon et al. 2024, renahon/debiasing_surgeon_ffw): the gates clamp(2σ(m/τ), 1)
on a model's weights, the temperature that falls 10x when the mutual information plateaus, and
the linear bias head on the bottleneck features; core/methods/ffw.py puts them together."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from core.attribution.gradients import scoped_layers
from core.methods.frozen import (
    AlwaysEval,
    penultimate,
)
from core.train.losses import mutual_information

STRUCTURES = ("unstructured", "structured")
TEMP_FACTOR, TEMP_THRESHOLD = 0.1, 5e-2  # gating_weights.py:144,146
HEAD_MOMENTUM, WEIGHT_DECAY = 0.9, 1e-4  # config.py:61,55
HEAD_PATIENCE, HEAD_THRESHOLD = 5, 1e-3  # training_functions.py train_PH_double


class TwoSigmoid(torch.autograd.Function):
    """clamp(2σ(x), max 1) forward; the derivative of the unclamped 2σ(x) backward (tools.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.clamp(2 * torch.sigmoid(x), max=1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * 2 * s * (1 - s)


def gate(m: torch.Tensor, tau: float) -> torch.Tensor:
    """clamp(2σ(m / τ), 1): 1 for m >= 0 and, as τ → 0, 0 for m < 0."""
    return TwoSigmoid.apply(m / tau)


class GatedModel(AlwaysEval):
    """The frozen model with a gate on every weight (unstructured: every linear/conv layer) or
    on every output channel (structured: every linear/conv layer but the last); its only
    parameters are the gate logits `m`, all 0 at the start (the ERM model exactly)."""

    def __init__(self, base: nn.Module, structure: str, tau: float = 1.0):
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"FFW structure must be one of {STRUCTURES}, got {structure!r}")
        self.base, self.structure, self.tau = base, structure, tau
        self.__dict__["template"] = copy.deepcopy(base)  # hook-free copy for pruned(), not a submodule
        layers = scoped_layers(base, "all")
        self.layers = layers if structure == "unstructured" else layers[:-1]
        if not self.layers:
            raise ValueError("FFW structured gating needs a linear/conv layer before the model's last one")
        self.m = nn.ParameterList([
            nn.Parameter(torch.zeros_like(mod.weight) if structure == "unstructured"
                         else torch.zeros(mod.weight.shape[0], device=mod.weight.device))
            for _, mod in self.layers])

    def masked(self, masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The gated weights (structured: and biases) multiplied by the masks."""
        out = {}
        for (name, mod), mask in zip(self.layers, masks):
            shape = mask.shape if self.structure == "unstructured" else (-1,) + (1,) * (mod.weight.dim() - 1)
            out[f"{name}.weight"] = mod.weight * mask.reshape(shape)
            if self.structure == "structured" and mod.bias is not None:
                out[f"{name}.bias"] = mod.bias * mask
        return out

    def soft_masks(self) -> list[torch.Tensor]:
        return [gate(m, self.tau) for m in self.m]

    def hard_masks(self) -> list[torch.Tensor]:
        """1 where the weight is kept (m >= 0), 0 where it is pruned (m < 0)."""
        return [(m >= 0).to(m.dtype).detach() for m in self.m]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.masked(self.soft_masks()), (x,), strict=False)

    def pruned(self) -> nn.Module:
        """A copy of the base model with the pruned weights (channels) set to zero."""
        model = copy.deepcopy(self.template)
        with torch.no_grad():
            for name, value in self.masked(self.hard_masks()).items():
                model.get_parameter(name).copy_(value)
        return model.eval()

    def sparsity(self) -> dict[str, float]:
        """Per gated layer: the share of its weights set to zero by pruning."""
        out = {}
        for (name, mod), mask in zip(self.layers, self.hard_masks()):
            full = mask.reshape((-1,) + (1,) * (mod.weight.dim() - 1)).expand_as(mod.weight) \
                if self.structure == "structured" else mask
            out[name] = float(1 - full.mean())
        return out

    def overall_sparsity(self) -> float:
        sizes = {name: mod.weight.numel() for name, mod in self.layers}
        per = self.sparsity()
        return float(sum(per[n] * sizes[n] for n in sizes) / sum(sizes.values()))


class PlateauDetector:
    """True once a loss has not improved by `threshold` (relative) for more than `patience`
    epochs (tools.py PlateauDetector)."""

    def __init__(self, patience: int = HEAD_PATIENCE, threshold: float = HEAD_THRESHOLD):
        self.patience, self.threshold, self.count, self.best = patience, threshold, 0, math.inf

    def step(self, value: float) -> bool:
        if value > (1.0 - self.threshold) * self.best:
            self.count += 1
        else:
            self.best, self.count = value, 0
        return self.count > self.patience


class TemperatureOnPlateau:
    """τ times TEMP_FACTOR once the MI has not improved by TEMP_THRESHOLD (relative) for more
    than `patience` epochs (tools.py ReduceTempOnPlateau); step() -> (τ, whether it fell)."""

    def __init__(self, patience: int, tau: float = 1.0):
        self.tau, self.patience, self.count, self.best = tau, patience, 0, None

    def step(self, value: float) -> tuple[float, bool]:
        if self.best is None:
            self.best = value
        elif value >= (1.0 - TEMP_THRESHOLD) * self.best or self.best < 0:
            self.count += 1
        else:
            self.best, self.count = value, 0
        if self.count > self.patience:
            self.count = 0
            self.tau *= TEMP_FACTOR
            return self.tau, True
        return self.tau, False


def new_head(dim: int, n_values: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(dim, n_values)


def head_optimizer(head: nn.Linear, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(head.parameters(), lr=lr, momentum=HEAD_MOMENTUM, weight_decay=WEIGHT_DECAY)


def train_head(head: nn.Linear, opt: torch.optim.Optimizer, feats: torch.Tensor, b: torch.Tensor,
               batch_size: int, max_epochs: int, rng: np.random.Generator) -> int:
    """Train the bias head on fixed features until its mean loss plateaus (or max_epochs);
    returns the epochs run."""
    plateau = PlateauDetector()
    for epoch in range(1, max_epochs + 1):
        losses = []
        order = torch.as_tensor(rng.permutation(len(b)))
        for start in range(0, len(b), batch_size):
            rows = order[start:start + batch_size]
            loss = F.cross_entropy(head(feats[rows]), b[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        if plateau.step(float(np.mean(losses))):
            return epoch
    return max_epochs


@torch.no_grad()
def bottleneck(model: nn.Module, images: np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """The input of the model's last linear layer for examples idx (eval mode), float32."""
    return torch.as_tensor(penultimate(model, images, idx, device), dtype=torch.float32)


@torch.no_grad()
def head_accuracy(head: nn.Linear, feats: torch.Tensor, b: torch.Tensor) -> float:
    return float((head(feats).argmax(1) == b).float().mean())


@torch.no_grad()
def mean_mi(model: nn.Module, head: nn.Linear, images: np.ndarray, idx: np.ndarray, b: torch.Tensor,
            n_values: int, batch_size: int, device: torch.device) -> float:
    """The scaled MI averaged over batches of idx (training_functions.py run_model)."""
    feats = bottleneck(model, images, idx, device)
    values = [float(mutual_information(b[s:s + batch_size], F.softmax(head(feats[s:s + batch_size]), 1), n_values))
              / math.log(n_values) for s in range(0, len(idx), batch_size)]
    return float(np.mean(values))
