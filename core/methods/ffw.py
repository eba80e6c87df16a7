"""FFW, Finding Fantastic Weights (Nahon et al., "Debiasing surgeon", ECCV 2024; seeds/004).

No weight is trained. On the analysis's frozen ERM model (encoder E = every linear/conv layer
but the last, classifier C = the last linear layer):
1. a bias-extraction head P (one linear layer on the bottleneck, the input of C) is trained on
   the training split to predict the bias attribute b;
2. gating parameters m, one per weight of E (`structure` = unstructured) or one per output
   neuron/channel of each layer of E (structured: the channel's weights and bias), mask E as
   W ⊙ σ(m / τ); m is learnt (Adam, `gate_lr`, through core.train.training.train) to minimise

       L = CE(C(E_m(x)), y) + γ · I(b; b̂),   b̂ ~ softmax(P(E_m(x)))   (core.train.losses.mutual_information)

   over `gate_epochs` epochs while the temperature τ falls geometrically from `tau_start` to
   `tau_end`, so that σ(m / τ) → {0, 1};
3. the weights (channels) whose gate closes (m <= 0) are set to zero: every other weight stays
   bit-identical. After each gate epoch the pruned model is scored by validation worst-group
   accuracy and the best epoch's gates are kept.
The bias attribute is `--group-attribute`, else the attribute that with the label forms the
dataset's `group` column; train bias labels are used (yes/yes). info records the sparsity per
layer and the bias head's validation accuracy before and after pruning (the same head, and a
head retrained on the pruned features): the paper's failure signatures are a task accuracy
that collapses, a bias accuracy that stays high, and a sparsity near 0.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from core.attribution.gradients import scoped_layers
from core.config import TrainConfig
from core.data.dataset import Dataset
from core.train.losses import mutual_information
from core.methods.base import MethodContext, MethodResult, register
from core.methods.options import Option
from core.methods.ffw_report import REPORT

from core.methods.frozen import AlwaysEval, Penultimate, labels_by_id, load_erm, penultimate
from core.methods.selection_by_val import EpochSelector
from core.progress import scaled
from core.train.training import predict_logits, train

STRUCTURES = ("unstructured", "structured")


def bias_attribute(data: Dataset, group_attribute: str | None) -> tuple[str, np.ndarray, list[str]]:
    """(attribute name, value index per example, value names) of the spurious attribute: the
    group attribute, else the one attribute that with the label forms the `group` column."""
    meta = data.metadata
    if group_attribute:
        column = group_attribute
    elif "group" in meta.columns:
        found = [a for a in data.attributes if _forms_groups(data.groups, data.labels, meta[a])]
        if not found:
            raise ValueError(f"FFW needs the bias attribute, and no attribute of {data.root} forms the `group` "
                             f"column with the label (attributes: {', '.join(data.attributes) or 'none'}): "
                             f"name one with --group-attribute")
        column = found[0]
    else:
        raise ValueError(f"FFW needs the bias attribute: {data.root} has no `group` column and no "
                         f"--group-attribute was given (attributes: {', '.join(data.attributes) or 'none'})")
    values = meta[column].astype(str)
    names = sorted(values.unique())
    if len(names) < 2:
        raise ValueError(f"FFW: the bias attribute {column!r} has a single value ({names[0]!r}): nothing to remove")
    return column, values.map({n: i for i, n in enumerate(names)}).to_numpy(np.int64), names


def _forms_groups(groups: np.ndarray, labels: np.ndarray, attribute: pd.Series) -> bool:
    """True when (label, attribute) and the group determine each other on every row."""
    frame = pd.DataFrame({"g": groups, "pair": pd.Series(labels).astype(str) + "\x00" + attribute.astype(str).values})
    return bool(frame.groupby("g")["pair"].nunique().max() == 1 and frame.groupby("pair")["g"].nunique().max() == 1)


def gate(m: torch.Tensor, tau: float) -> torch.Tensor:
    """σ(m / τ): tends to the step 1[m > 0] as τ → 0."""
    return torch.sigmoid(m / tau)


def temperatures(start: float, end: float, epochs: int) -> list[float]:
    """τ for each gate epoch, geometric from start to end (0 < end <= start: the options' domains
    and FFW's rule)."""
    return [start * (end / start) ** (e / max(1, epochs - 1)) for e in range(epochs)]


def temperature_rule(params: dict) -> str | None:
    """The temperature anneals: tau_end <= tau_start."""
    if params["tau_end"] > params["tau_start"]:
        return f"tau_end={params['tau_end']:g} is above tau_start={params['tau_start']:g}: the temperature falls"
    return None


class GatedModel(AlwaysEval):
    """The frozen model with a sigmoid gate on every weight (or output channel) of its encoder;
    its only parameters are the gate logits `m`."""

    def __init__(self, base: nn.Module, structure: str, init: float, tau: float):
        super().__init__()
        self.base, self.structure, self.tau = base, structure, tau
        self.__dict__["template"] = copy.deepcopy(base)  # hook-free copy for pruned(), not a submodule
        self.layers = scoped_layers(base, "all")[:-1]
        if not self.layers:
            raise ValueError("FFW needs an encoder: the model has no linear/conv layer before its last one")
        self.m = nn.ParameterList([
            nn.Parameter(torch.full_like(mod.weight, init) if structure == "unstructured"
                         else torch.full((mod.weight.shape[0],), float(init), device=mod.weight.device))
            for _, mod in self.layers])

    def masked(self, masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The encoder's weights (structured: and biases) multiplied by the masks."""
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
        return [(m > 0).to(m.dtype).detach() for m in self.m]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.masked(self.soft_masks()), (x,), strict=False)

    def pruned(self) -> nn.Module:
        """A copy of the base model with the closed gates' weights (channels) set to zero."""
        model = copy.deepcopy(self.template)
        with torch.no_grad():
            for name, value in self.masked(self.hard_masks()).items():
                model.get_parameter(name).copy_(value)
        return model.eval()

    def sparsity(self) -> dict[str, float]:
        """Per layer: the share of its weights set to zero by the closed gates."""
        return {name: float(1 - mask.mean()) for (name, _), mask in zip(self.layers, self.hard_masks())}

    def undecided(self, low: float = 0.05, high: float = 0.95) -> float:
        """Share of gates strictly between `low` and `high` at the current temperature."""
        g = torch.cat([s.flatten() for s in self.soft_masks()])
        return float(((g > low) & (g < high)).float().mean())


def train_bias_head(feats: np.ndarray, b: np.ndarray, n_values: int, seed: int, steps: int = 300) -> nn.Linear:
    """A linear head predicting b from features: full-batch Adam on the cross-entropy, with
    the features standardised (the scaling folded into the returned layer)."""
    torch.manual_seed(seed)
    x = torch.as_tensor(feats, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z, y = (x - mean) / std, torch.as_tensor(b)
    head = nn.Linear(x.shape[1], n_values)
    opt = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(z), y).backward()
        opt.step()
    out = nn.Linear(x.shape[1], n_values)
    with torch.no_grad():
        out.weight.copy_(head.weight / std)
        out.bias.copy_(head.bias - (head.weight / std) @ mean)
    return out.requires_grad_(False)


def head_accuracy(head: nn.Linear, feats: np.ndarray, b: np.ndarray) -> float:
    with torch.no_grad():
        pred = head(torch.as_tensor(feats, dtype=torch.float32)).argmax(1).numpy()
    return float((pred == b).mean())


class GateLoss:
    """loss_fn of the gate training: CE(task) + γ · I(b; b̂) on the batch (b by example id)."""

    def __init__(self, bottleneck: Penultimate, head: nn.Linear, b_by_id: torch.Tensor, n_values: int, gamma: float):
        self.bottleneck, self.head, self.b, self.n_values, self.gamma = bottleneck, head, b_by_id, n_values, gamma

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, batch_ids: np.ndarray) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        if self.gamma:
            b = self.b[torch.as_tensor(batch_ids)].to(logits.device)
            probs = F.softmax(self.head(self.bottleneck.features), dim=1)
            loss = loss + self.gamma * mutual_information(b, probs, self.n_values)
        return loss


def learn_gates(ctx: MethodContext, base: nn.Module, params: dict, b: np.ndarray, n_values: int,
                head: nn.Linear) -> tuple[GatedModel, EpochSelector, list[dict]]:
    """Gate logits learnt through core.train.training.train with τ annealed after each epoch; the
    returned model holds the epoch with the best validation WGA of its pruned model."""
    taus = temperatures(params["tau_start"], params["tau_end"], params["gate_epochs"])
    gated = GatedModel(base, params["structure"], params["gate_init"], taus[0]).to(ctx.device)
    bottleneck = Penultimate(base)
    head = head.to(ctx.device)
    loss = GateLoss(bottleneck, head, labels_by_id(len(ctx.data.labels), ctx.train_idx, b[ctx.train_idx]),
                    n_values, params["gamma"])
    selector = EpochSelector(lambda g: ctx.val_wga(g.pruned()))
    schedule: list[dict] = []

    def on_epoch(epoch: int, model: GatedModel) -> None:
        schedule.append({"epoch": epoch + 1, "tau": model.tau, "undecided_gates": model.undecided(),
                         "sparsity": float(np.mean(list(model.sparsity().values())))})
        selector(epoch, model)
        model.tau = taus[min(epoch + 1, len(taus) - 1)]

    seed = int(params.get("seed", ctx.cfg.train.seed))
    per_epoch = math.ceil(len(ctx.train_idx) / ctx.cfg.train.batch_size)
    cfg = TrainConfig(lr=params["gate_lr"], weight_decay=0.0, batch_size=ctx.cfg.train.batch_size, seed=seed,
                      steps=params["gate_epochs"] * per_epoch)
    try:
        train(gated, ctx.data.images, ctx.data.labels, ctx.train_idx, cfg, ctx.device, loss_fn=loss,
              on_epoch=on_epoch, report=scaled(ctx.report, "FFW gates: "))
    finally:
        bottleneck.handle.remove()
    gated.load_state_dict(selector.best_state)
    return gated, selector, schedule


@register("ffw", "FFW (Finding Fantastic Weights)", group_info="yes/yes", removes=False,
          options={"structure": Option("unstructured", choices=STRUCTURES,
                                       help="a gate per weight (unstructured) or per output channel (structured)"),
                   "gamma": Option(1.0, ge=0, help="γ: weight of the mutual information I(b; b̂)"),
                   "gate_epochs": Option(4, ge=1, help="epochs of gate training"),
                   "tau_start": Option(1.0, gt=0, help="the gates' first temperature τ"),
                   "tau_end": Option(0.01, gt=0, help="the gates' last temperature τ (<= tau_start)"),
                   "gate_lr": Option(0.05, gt=0, help="Adam learning rate of the gate logits"),
                   "gate_init": Option(3.0, help="the gate logits' initial value m (σ(m/τ): > 0 starts open)")},
          report=REPORT, rule=temperature_rule)
def ffw(ctx: MethodContext, params: dict) -> MethodResult:
    column, b, names = bias_attribute(ctx.data, ctx.cfg.data.group_attribute)
    base = load_erm(ctx)
    data, train_idx, val_idx = ctx.data, ctx.train_idx, ctx.val_idx
    seed = int(params.get("seed", ctx.cfg.train.seed))
    head = train_bias_head(penultimate(base, data.images, train_idx, ctx.device), b[train_idx], len(names), seed)
    acc_before = head_accuracy(head, penultimate(base, data.images, val_idx, ctx.device), b[val_idx])
    gated, selector, schedule = learn_gates(ctx, base, params, b, len(names), head)
    model = gated.pruned()
    val_feats = penultimate(model, data.images, val_idx, ctx.device)
    retrained = train_bias_head(penultimate(model, data.images, train_idx, ctx.device), b[train_idx], len(names), seed)
    y_val = data.labels[val_idx]
    task_acc = float((predict_logits(model, data.images, val_idx, ctx.device).argmax(1) == y_val).mean())
    sparsity = gated.sparsity()
    sizes = {name: mod.weight.numel() for name, mod in gated.layers}
    info = {**selector.info(), "bias_attribute": column, "bias_values": names, "structure": params["structure"],
            "gamma": params["gamma"], "temperature_schedule": schedule, "sparsity_per_layer": sparsity,
            "sparsity": float(sum(sparsity[n] * sizes[n] for n in sizes) / sum(sizes.values())),
            "bias_head_val_acc_before": acc_before,
            "bias_head_val_acc_after": head_accuracy(head, val_feats, b[val_idx]),
            "bias_head_val_acc_after_retrained": head_accuracy(retrained, val_feats, b[val_idx]),
            "task_val_acc_before": float(ctx.analysis.read_json("metrics")["val"]["acc"]),
            "task_val_acc_after": task_acc,
            "bias_majority_share_val": float(np.bincount(b[val_idx]).max() / len(val_idx))}
    return MethodResult(model, np.zeros(0, np.int64), 0, info)
