"""FFW, Finding Fantastic Weights (Nahon et al., "Debiasing surgeon", ECCV 2024; seeds/004).

Run as the authors' code runs it (github renahon/debiasing_surgeon_ffw; files named below).
No weight is trained: the analysis's ERM model is frozen and FFW learns which of its weights
to set to zero.
- Data: the gates and the bias head are trained on a small group-balanced ("unbiased") split,
  not on the biased training split, where the task loss defends the shortcut: a
  `fit_fraction` (0.6, CelebA's split in dataloaders.py:246-248) of every validation group,
  balanced (core.methods.frozen.val_fit_select); the rest of validation is the "unbiased
  validation" split that drives the temperature and picks the checkpoint.
- Bias head P ("privacy head", irene/core.py): one linear layer on the bottleneck (the input
  of the model's last linear layer) predicting the bias attribute b, trained with SGD (`head_lr`
  0.1, momentum 0.9, weight decay 1e-4: config.py:50,55,61) until its loss plateaus (patience
  5 epochs, relative threshold 1e-3, at most `head_max_epochs` 200: training_functions.py
  `train_PH_double`, config.py:70), first on the ERM model (`init_PH`).
- Gates: one logit m per weight of every linear/conv layer, the classifier included (every
  non-batch-norm `.weight`, gating_weights.py:39-49; biases are neither gated nor pruned),
  m = 0 at the start, and the gated weight is W · clamp(2σ(m/τ), max 1) with the gradient of
  the unclamped 2σ (tools.py `TwoSigmoid`): training starts exactly from the ERM model.
- Gate training (gating_weights.py `train_gating_weights_epoch`): Adam (`gate_lr` 1e-3, its
  default, weight decay 1e-4: gating_weights.py:127) on batches of `batch_size` 100
  (config.py:22) minimising

      α CE(C(E_m(x)), y) + γ I(b; b̂) / log K,   b̂ = softmax(P(bottleneck)),  α = 1, γ = 10

  (config.py:58-59; irene/core.py `MI` divides by log K, K bias values); P is updated on the
  same batches by its own cross-entropy on the detached bottleneck (the MI's gradient on P is
  discarded), and after every epoch P is retrained to a plateau on the gated model.
- Temperature (tools.py `ReduceTempOnPlateau`, gating_weights.py:141-150): τ starts at 1 and
  is divided by 10 when the MI on the unbiased validation split has not improved by 5%
  (relative) for more than `gate_patience` 5 epochs; training stops when τ < `min_temperature`
  1e-8 or after `max_gate_epochs` 200 (config.py:72-73).
- Checkpoint (gating_weights.py:272-372): at every temperature drop the model is pruned (m < 0
  set to zero, every other weight bit-identical: training_functions.py
  `prune_based_on_gating_weights`), a copy of the first bias head is retrained on the pruned
  model to a plateau, and the gates whose pruned model leaves that head least accurate on
  the unbiased validation split are kept (`select_by` = bias_acc). The unpruned model is
  never a candidate. (Exact ties, common when several checkpoints leave the head at chance,
  go to the better worst-group and then average accuracy; the official `<` keeps the first,
  which may be a checkpoint whose task accuracy collapsed.)
The bias attribute is `--group-attribute`, else the attribute that with the label forms the
dataset's `group` column; only validation bias labels are used (no/yes).

Deliberate differences (README, "PGD, FFW and BA-LoRA"):
- `structure` = structured (an option; the official `StructuredGate` is defined but never
  used by main.py): one gate per output channel of every linear/conv layer but the last, the
  channel's weights and bias pruned together.
- `select_by` = val_wga: the temperature-drop checkpoint with the best worst-group accuracy on
  the unbiased validation split instead of the least accurate bias head.
- An epoch of gate training is at least `epoch_steps` 100 steps (the fitting part reshuffled
  as often as needed): one official epoch on Biased-MNIST is 10,000 examples in batches of 100
  (dataloaders.py:172-174), and the temperature schedule counts epochs, so on a fitting part of
  a few hundred images (2-3 steps per pass) τ would fall, and the first checkpoints be pruned
  at m < 0, before the gates had moved.
- The bias head is trained on cached bottleneck features (the frozen model runs in eval mode
  without augmentation, so the features of a split do not change while the head trains).
info records per temperature drop the sparsity, the retrained head's bias accuracy and the
task accuracy, and the paper's failure signatures (`signatures`): task accuracy collapsed,
bias still extractable, sparsity near 0 (core/methods/ffw_report.py).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from core.data.dataset import Dataset
from core.data.images import to_tensor
from core.methods.base import MethodContext, MethodResult, register
from core.methods.ffw_gates import (STRUCTURES, WEIGHT_DECAY, GatedModel, TemperatureOnPlateau, bottleneck, head_accuracy,
                                    head_optimizer, mean_mi, new_head, train_head)
from core.methods.ffw_report import REPORT
from core.methods.options import Option
from core.methods.frozen import (
    Penultimate,
    load_erm,
    val_fit_select,
    val_groups_reason,
)
from core.train.losses import mutual_information
from core.train.metrics import group_metrics
from core.train.training import predict_logits, seed_everything

SELECT_BY = ("bias_acc", "val_wga")
ALPHA = 1.0  # task-loss weight (config.py:59)


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


def learn_gates(ctx: MethodContext, base: nn.Module, params: dict, b: np.ndarray, n_values: int,
                fit_idx: np.ndarray, sel_idx: np.ndarray, seed: int) -> tuple[GatedModel, list[dict], dict]:
    """The official gate training (see the module docstring); returns the gated model holding
    the kept checkpoint's gates, one record per epoch, and the first head's figures."""
    data, device, bs = ctx.data, ctx.device, params["batch_size"]
    rng = np.random.default_rng(50_000 + seed)
    b_t = torch.as_tensor(np.array(b))
    b_fit, b_sel = b_t[torch.as_tensor(fit_idx)], b_t[torch.as_tensor(sel_idx)]
    head0, first = first_head(ctx, base, params, (fit_idx, b_fit), (sel_idx, b_sel), n_values, seed, rng)

    gated = GatedModel(base, params["structure"]).to(device)
    head = copy.deepcopy(head0).to(device)
    head_opt = head_optimizer(head, params["head_lr"])
    gate_opt = torch.optim.Adam(gated.m.parameters(), lr=params["gate_lr"], weight_decay=WEIGHT_DECAY)
    temperature = TemperatureOnPlateau(params["gate_patience"])
    hook = Penultimate(base)
    labels = torch.as_tensor(np.array(data.labels))
    seed_everything(seed)
    schedule: list[dict] = []
    best_key, best_state = None, None
    steps = max(math.ceil(len(fit_idx) / bs), params["epoch_steps"])  # gate steps per epoch
    passes = math.ceil(steps * bs / len(fit_idx))
    try:
        for epoch in range(params["max_gate_epochs"]):
            order = np.concatenate([rng.permutation(fit_idx) for _ in range(passes)])
            for start in range(0, steps * bs, bs):
                batch = np.sort(order[start:start + bs])
                x, y, bb = to_tensor(data.images[batch], device), labels[batch].to(device), b_t[batch].to(device)
                gate_step(gated, hook, head, (gate_opt, head_opt), (x, y, bb), params["gamma"], n_values)
            train_head(head, head_opt, bottleneck(gated, data.images, fit_idx, device), b_fit, bs,
                       params["head_max_epochs"], rng)
            mi_val = mean_mi(gated, head, data.images, sel_idx, b_sel, n_values, bs, device)
            row = {"epoch": epoch + 1, "tau": gated.tau, "mi_val": mi_val, "sparsity": gated.overall_sparsity()}
            tau, dropped = temperature.step(mi_val)
            if dropped:
                row.update(checkpoint(ctx, gated, head0, params, fit_idx, sel_idx, b_fit, b_sel, rng))
                key = ((-row["bias_acc_retrained"], *row["val_score"]) if params["select_by"] == "bias_acc"
                       else row["val_score"])
                if best_key is None or key > best_key:
                    best_key, best_state = key, copy.deepcopy(gated.state_dict())
                    row["kept"] = True
                gated.tau = tau
                if tau < params["min_temperature"]:
                    schedule.append(row)
                    break
                train_head(head, head_opt, bottleneck(gated, data.images, fit_idx, device), b_fit, bs,
                           params["head_max_epochs"], rng)
            schedule.append(row)
    finally:
        hook.handle.remove()
    if best_state is not None:
        gated.load_state_dict(best_state)
    return gated, schedule, {**first, "checkpoint_found": best_state is not None}


def first_head(ctx: MethodContext, base: nn.Module, params: dict, fit: tuple, sel: tuple, n_values: int,
               seed: int, rng: np.random.Generator) -> tuple[nn.Linear, dict]:
    """The bias head trained to a plateau on the ERM model's features (`fit`: indices and bias
    values), and its accuracy on the selection part (`sel`) before any pruning."""
    (fit_idx, b_fit), (sel_idx, b_sel) = fit, sel
    feats0 = bottleneck(base, ctx.data.images, fit_idx, ctx.device)
    head0 = new_head(feats0.shape[1], n_values, seed)
    train_head(head0, head_optimizer(head0, params["head_lr"]), feats0, b_fit, params["batch_size"],
               params["head_max_epochs"], rng)
    sel_feats = bottleneck(base, ctx.data.images, sel_idx, ctx.device)
    return head0, {"bias_head_val_acc_before": head_accuracy(head0, sel_feats, b_sel)}


def gate_step(gated: GatedModel, hook: Penultimate, head: nn.Linear, opts: tuple, batch: tuple, gamma: float,
              n_values: int) -> None:
    """One step of gating_weights.py: the gates descend ALPHA x task loss + gamma x the mutual
    information (normalised by log of the number of bias values) between the bias and the
    head's prediction; the head descends its own cross-entropy only."""
    gate_opt, head_opt = opts
    x, y, bb = batch
    logits = gated(x)
    feats = hook.features
    mi = mutual_information(bb, F.softmax(head(feats), 1), n_values) / math.log(n_values)
    objective = ALPHA * F.cross_entropy(logits, y) + gamma * mi
    gate_opt.zero_grad()
    head_opt.zero_grad()
    objective.backward()
    head_opt.zero_grad()  # the MI must not train the head (gating_weights.py:487-489)
    F.cross_entropy(head(feats.detach()), bb).backward()
    gate_opt.step()
    head_opt.step()


def checkpoint(ctx: MethodContext, gated: GatedModel, head0: nn.Linear, params: dict, fit_idx: np.ndarray,
               sel_idx: np.ndarray, b_fit: torch.Tensor, b_sel: torch.Tensor, rng: np.random.Generator) -> dict:
    """At a temperature drop: the pruned model, a copy of the first head retrained on it, and
    what it leaves (gating_weights.py:280-372)."""
    data, device = ctx.data, ctx.device
    pruned = gated.pruned()
    head = copy.deepcopy(head0)
    train_head(head, head_optimizer(head, params["head_lr"]), bottleneck(pruned, data.images, fit_idx, device),
               b_fit, params["batch_size"], params["head_max_epochs"], rng)
    wga, acc = ctx.val_score(pruned, sel_idx)
    return {"bias_acc_retrained": head_accuracy(head, bottleneck(pruned, data.images, sel_idx, device), b_sel),
            "val_score": (wga, acc), "task_acc_pruned": acc, "pruned_sparsity": gated.overall_sparsity()}


@register("ffw", "FFW (Finding Fantastic Weights)", group_info="no/yes", removes=False,
          trains_on="gates and bias head on a group-balanced 60% of validation; the rest of validation "
                    "sets the temperature and picks the checkpoint",
          requires=val_groups_reason, report=REPORT,
          options={"structure": Option("unstructured", choices=STRUCTURES,
                                       help="a gate per weight (unstructured) or per output channel (structured)"),
                   "gamma": Option(10.0, ge=0, help="γ: weight of I(b; b̂) / log(number of bias values)"),
                   "gate_lr": Option(1e-3, gt=0, help="learning rate of the gate logits"),
                   "batch_size": Option(100, ge=1, help="examples per batch"),
                   "max_gate_epochs": Option(200, ge=1, help="epochs of gate training at most"),
                   "epoch_steps": Option(100, ge=1, help="optimizer steps per gate epoch"),
                   "gate_patience": Option(5, ge=0, help="epochs without MI progress before τ falls 10x"),
                   "min_temperature": Option(1e-8, gt=0, lt=1, help="training stops when τ falls below this"),
                   "head_lr": Option(0.1, gt=0, help="learning rate of the bias head"),
                   "head_max_epochs": Option(200, ge=1, help="epochs of bias-head training at most"),
                   "fit_fraction": Option(0.6, gt=0, lt=1, help="share of validation the gates and head fit on"),
                   "select_by": Option("bias_acc", choices=SELECT_BY, help="keep the checkpoint whose retrained "
                                                                          "bias head is least accurate, or best val WGA")})
def ffw(ctx: MethodContext, params: dict) -> MethodResult:
    column, b, names = bias_attribute(ctx.data, ctx.cfg.data.group_attribute)
    seed = int(params.get("seed", ctx.cfg.train.seed))
    fit_idx, sel_idx = val_fit_select(ctx, params["fit_fraction"], seed)
    base = load_erm(ctx)
    gated, schedule, first = learn_gates(ctx, base, params, b, len(names), fit_idx, sel_idx, seed)
    model = gated.pruned()
    data, device = ctx.data, ctx.device
    b_sel = torch.as_tensor(b[sel_idx])
    feats_fit = bottleneck(model, data.images, fit_idx, device)
    retrained = new_head(feats_fit.shape[1], len(names), seed)
    train_head(retrained, head_optimizer(retrained, params["head_lr"]), feats_fit, torch.as_tensor(b[fit_idx]),
               params["batch_size"], params["head_max_epochs"], np.random.default_rng(60_000 + seed))
    y_sel = data.labels[sel_idx]
    before = predict_logits(base, data.images, sel_idx, device).argmax(1)
    after = predict_logits(model, data.images, sel_idx, device).argmax(1)
    sel_metrics = group_metrics(after, y_sel, data.groups[sel_idx], data.group_names)
    kept = ([row for row in schedule if row.get("kept")] or [None])[-1]
    info = {"bias_attribute": column, "bias_values": names, "structure": params["structure"],
            "gamma": params["gamma"], "select_by": params["select_by"],
            "selected_by": ("the retrained bias head's lowest accuracy on the selection part of validation"
                            if params["select_by"] == "bias_acc" else
                            "worst-group accuracy on the selection part of validation"),
            "selected_epoch": kept["epoch"] if kept else None, "selected_val_wga": sel_metrics["wga"],
            "checkpoint_found": first["checkpoint_found"], "gate_epochs_run": len(schedule),
            "temperature_schedule": schedule, "sparsity_per_layer": gated.sparsity(),
            "sparsity": gated.overall_sparsity(), "n_val_fit": len(fit_idx), "n_val_select": len(sel_idx),
            "bias_head_val_acc_before": first["bias_head_val_acc_before"],
            "bias_head_val_acc_after_retrained": head_accuracy(retrained, bottleneck(model, data.images, sel_idx, device),
                                                               b_sel),
            "task_val_acc_before": float((before == y_sel).mean()), "task_val_acc_after": float((after == y_sel).mean()),
            "bias_majority_share_val": float(np.bincount(b[sel_idx]).max() / len(sel_idx))}
    return MethodResult(model, np.zeros(0, np.int64), 0, info)
