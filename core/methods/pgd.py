"""PGD, Per-sample Gradient-based Debiasing (Ahn, Kim, Yun; ICLR 2023; seeds/000).

Run as the authors' code runs it (github sumyeongahn/PGD, trainer/learner.py `train_ours`):
1. A biased model f_b trained with uniform batches and the generalized cross-entropy
   (core.train.losses.gce, option `q` = 0.7: train.py:38 and learner.py:263), on the ERM step budget.
   With `biased_width` < 1 it is a narrower copy of the architecture (channel widths divided
   by 1/biased_width; small_cnn; seed 000's ablation, not in the official code).
2. Importance of each training example, Algorithm 1 of the paper:

       h(x_i, y_i) = ||∇θ L_CE(f_b(x_i), y_i)||_r / Σ_{j ∈ D} ||∇θ L_CE(f_b(x_j), y_j)||_r

   normalised over the whole training set D, not per class and not per batch: Algorithm 1 sums
   over D and learner.py:333-337 divides by the global sum (the norms clamped at 1e-8 first,
   learner.py:334). θ (`grad_scope`): `fc`, the final linear layer's weight matrix as in the
   official code (gradient.py:59 hooks `fc.weight` only; learner.py:302 target ['fc']), whose
   per-example gradient is the outer product (p - e_y) aᵀ of the softmax error and the
   penultimate features a, so its l1 / l2 / l∞ norm is the product of the two vectors' norms
   (exact, no per-example backward); or `all` (seed 000's ablation): every linear/conv layer's
   weight and bias through the project's per-example gradient code
   (core/attribution/gradients.py, hooks and Σ_l δ_l a_lᵀ for the margin m = log p_y/(1-p_y);
   ∇CE = -(1 - p_y) ∇m exactly). r = `norm` (l1 | l2 | linf). Step 2's time and peak memory go
   to info.
3. The debiased model starts from the biased model's weights (`init` = biased:
   learner.py:346 `model_d.load_state_dict(model_b.state_dict())`; `fresh` for a new random
   initialisation, which is also what a narrower biased model forces) and is trained on the
   ERM step budget with batches drawn with probability h (`mode` = resample, the paper's; the
   official sampler draws each example i.i.d. from h, data.py:59-64) or with the per-example
   loss weighted by N·h (reweight, the paper's ablation). Its epoch is chosen by validation
   worst-group accuracy, ties broken by validation average accuracy.

Deliberate differences from the official code (README, "PGD, FFW and BA-LoRA"):
- recipe: both models use the analysis's training recipe (Adam, its lr and weight decay, the
  ERM step budget, no augmentation) so that PGD is compared with ERM and the other methods at
  the same budget; the official Colored-MNIST recipe (utils/pre_conf.py) is SGD lr 0.02,
  momentum 0.9, weight decay 1e-3, batch 128, 100 epochs with the lr divided by 10 every 40
  epochs, and random resized crops, colour jitter and rotations (module/data.py).
- GCE: (1 - p_y^q)/q, whose gradient is p_y^q ∇CE; the official GeneralizedCELoss
  (module/loss.py) weights the cross-entropy by q·p_y^q (detached), the same direction scaled
  by the constant q.
- norm: l2, as the paper states; train.py:39's default `--norm_scale 0.7` (which
  `--reproduce` leaves unchanged) is the p = 0.7 quasi-norm, not offered here.
- checkpoint: the epoch with the best validation worst-group accuracy (group labels on
  validation: no/yes, like JTT here), where the official code keeps the epoch with the lowest
  loss on a validation split drawn like train (learner.py:255-258, 380).
The per-group share of h, the training share of each group and the gap between minority- and
majority-group validation accuracy go to info: the Compare page shows them (see
`signatures`): with a two-valued bias every conflicting example carries the other value, and
resampling toward them teaches the reversed shortcut.
"""
from __future__ import annotations

import copy
import math
import resource
import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.attribution.gradients import (
    capture,
    layer_grads,
    layer_inputs,
    scoped_layers,
    true_class_prob,
)
from core.attribution.trak import proxy_model_config
from core.data.images import to_tensor
from core.methods.base import MethodContext, MethodResult, register
from core.methods.frozen import last_linear
from core.methods.options import Option
from core.methods.pgd_report import REPORT, sampling_summary
from core.methods.selection_by_val import EpochSelector, keep_best
from core.progress import scaled
from core.train import training
from core.train.losses import gce
from core.train.models import build_model
from core.train.training import fit, predict_logits

NORMS = ("l1", "l2", "linf")
SCOPES = ("fc", "all")
WIDTHS = (1.0, 0.5, 0.25)
INITS = ("biased", "fresh")
ORD = {"l1": 1, "l2": 2, "linf": float("inf")}



def _fc_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """||∂CE/∂W_fc|| per example: the gradient is the outer product (p - e_y) aᵀ, whose l1, l2
    (Frobenius) and l∞ norms are the products of the two vectors' norms."""
    feats: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(lambda m, inp, out: feats.append(inp[0].flatten(1)))
    try:
        logits = model(x)
    finally:
        hook.remove()
    err = F.softmax(logits.double(), 1) - F.one_hot(y, logits.shape[1]).double()
    return torch.linalg.vector_norm(err, ORD[norm], 1) * torch.linalg.vector_norm(feats[0].double(), ORD[norm], 1)


@torch.no_grad()
def _all_norms(model: nn.Module, layers: list, x: torch.Tensor, y: torch.Tensor, norm: str) -> tuple[torch.Tensor, int]:
    xs, delta, logits = capture(model, layers, x, y)
    acc, block = torch.zeros(len(y), device=x.device, dtype=torch.float64), 0
    for (_, m), x_i, d_i in zip(layers, xs, delta):
        g = layer_grads(layer_inputs(m, x_i), d_i).flatten(1)  # margin gradients (B, params)
        block = max(block, g.numel() * g.element_size())
        acc = (acc + g.abs().sum(1, dtype=torch.float64) if norm == "l1"
               else acc + (g * g).sum(1, dtype=torch.float64) if norm == "l2"
               else torch.maximum(acc, g.abs().amax(1).double()))
    scale = 1.0 - true_class_prob(logits, y).double()  # |∇CE| = (1 - p_y) |∇ margin|
    return scale * (acc.sqrt() if norm == "l2" else acc), block


def ce_grad_norms(model: nn.Module, images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
                  device: torch.device, scope: str = "fc", norm: str = "l2", batch_size: int = 32
                  ) -> tuple[np.ndarray, int]:
    """||∇θ CE(f(x_i), y_i)||_norm for examples idx (model in eval mode), and the largest
    per-example gradient block formed (bytes). θ: the final layer's weight (fc) or every
    linear/conv layer's weight and bias (all)."""
    if norm not in NORMS or scope not in SCOPES:
        raise ValueError(f"PGD norm must be one of {NORMS} and grad_scope one of {SCOPES} "
                         f"(got norm={norm!r}, grad_scope={scope!r})")
    layers = scoped_layers(model, "all")
    labels_t = torch.tensor(np.asarray(labels), dtype=torch.int64)
    model.eval().to(device)
    out, block = [], 0
    for start in range(0, len(idx), batch_size):
        batch = idx[start:start + batch_size]
        x, y = to_tensor(images[batch], device), labels_t[batch].to(device)
        if scope == "fc":
            with torch.no_grad():
                norms = _fc_norms(model, x, y, norm)
            block = max(block, len(batch) * last_linear(model).weight.numel() * 4)  # never formed: its size
        else:
            norms, size = _all_norms(model, layers, x, y, norm)
            block = max(block, size)
        out.append(norms.cpu())
    return torch.cat(out).numpy(), block


def importance(norms: np.ndarray) -> np.ndarray:
    """h_i = ||g_i|| / Σ_j ||g_j|| over the whole training set (norms clamped at 1e-8 as in the
    authors' code, learner.py:334, so that no example has probability 0)."""
    mag = np.clip(np.asarray(norms, np.float64), 1e-8, None)
    return mag / mag.sum()


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured_norms(model: nn.Module, ctx: MethodContext, scope: str, norm: str) -> tuple[np.ndarray, dict]:
    """Step 2 with its wall time and peak memory: the CUDA allocator's peak on a GPU, else the
    growth of the process's peak RSS (0 when step 2 stays below an earlier peak)."""
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
    rss = peak_rss_mb()
    start = time.perf_counter()
    norms, block = ce_grad_norms(model, ctx.data.images, ctx.data.labels, ctx.train_idx, ctx.device, scope, norm)
    if cuda:
        torch.cuda.synchronize(ctx.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if cuda else peak_rss_mb() - rss
    return norms, {"step2_seconds": seconds, "step2_peak_memory_mb": peak,
                   "step2_memory_measure": "CUDA max_memory_allocated" if cuda else "growth of the process peak RSS",
                   "step2_largest_gradient_block_mb": block / 2**20}


def weighted_ce(weights_by_id: np.ndarray):
    """loss_fn for `mode` = reweight: mean over the batch of w_i · CE_i (w by example id)."""
    w = torch.as_tensor(weights_by_id, dtype=torch.float32)

    def loss(logits: torch.Tensor, y: torch.Tensor, batch_ids: np.ndarray) -> torch.Tensor:
        return (w[torch.as_tensor(batch_ids)].to(logits.device) * F.cross_entropy(logits, y, reduction="none")).mean()
    return loss


def biased_config(ctx: MethodContext, width: float):
    """The analysis config with the biased model's architecture (width 1 | 0.5 | 0.25)."""
    if width not in WIDTHS:
        raise ValueError(f"PGD biased_width must be one of {', '.join(map(str, WIDTHS))}, got {width}")
    if width < 1 and ctx.cfg.model.arch != "small_cnn":
        raise ValueError(f"PGD biased_width={width} needs arch small_cnn (narrower copies), not {ctx.cfg.model.arch!r}")
    return replace(ctx.cfg, model=proxy_model_config(ctx.cfg.model, round(1 / width)))


def debiased_model(ctx: MethodContext, biased: nn.Module, params: dict, **hooks) -> tuple[nn.Module, int, dict]:
    """Step 3: the debiased model (from the biased weights or fresh) trained with the hooks on
    the ERM step budget; the epoch with the best validation WGA is kept."""
    cfg = ctx.recipe(params)
    if params["init"] == "biased" and params["biased_width"] == 1:
        model, start = copy.deepcopy(biased), "the biased model's weights (official learner.py:346)"
    else:
        torch.manual_seed(cfg.seed)
        model = build_model(ctx.cfg.model, ctx.data.n_classes, ctx.cfg.data.image_size)
        start = "a fresh initialisation" + (" (the biased model is narrower)" if params["init"] == "biased" else "")
    selector = EpochSelector(ctx.val_score)
    steps = training.train(model, ctx.data.images, ctx.data.labels, ctx.train_idx, cfg, ctx.device,
                           on_epoch=selector, report=scaled(ctx.report, "PGD debiased model: "), **hooks)
    keep_best(selector, model, steps, math.ceil(len(ctx.train_idx) / cfg.batch_size))
    return model.eval(), steps, {**selector.info(), "debiased_init": start}


@register("pgd", "PGD (per-sample gradient debiasing)", group_info="no/yes", removes=False,
          options={"q": Option(0.7, gt=0, le=1, help="q of the biased model's generalized cross-entropy"),
                   "norm": Option("l2", choices=NORMS, help="r of the gradient norm ||∇θ L||_r"),
                   "grad_scope": Option("fc", choices=SCOPES, help="θ: the final layer (fc) or every layer"),
                   "mode": Option("resample", choices=("resample", "reweight"),
                                  help="draw batches with probability h, or weight the loss by N·h"),
                   "init": Option("biased", choices=INITS, help="the debiased model starts from the biased "
                                                                "model's weights (official) or fresh"),
                   "biased_width": Option(1.0, choices=WIDTHS, help="the biased model's channel width "
                                                                    "(< 1: small_cnn only)")}, report=REPORT)
def pgd(ctx: MethodContext, params: dict) -> MethodResult:
    cfg_b = biased_config(ctx, params["biased_width"])
    idx = ctx.train_idx
    biased = fit(ctx.data, idx, cfg_b, ctx.recipe(params), ctx.device, scaled(ctx.report, "PGD biased model: "),
                 loss_fn=lambda logits, y, _ids: gce(logits, y, params["q"]))
    ctx.report("PGD per-example gradients", 0, 1)
    norms, measures = measured_norms(biased.model, ctx, params["grad_scope"], params["norm"])
    h = importance(norms)
    if params["mode"] == "resample":
        hooks = {"sample_probs": h}
    else:
        by_id = np.zeros(len(ctx.data.labels))
        by_id[idx] = h * len(idx)
        hooks = {"loss_fn": weighted_ce(by_id)}
    model, steps, info = debiased_model(ctx, biased.model, params, **hooks)
    summary = sampling_summary(h, ctx.data.groups[idx], ctx.data.labels[idx], ctx.data.group_names)
    biased_pred = predict_logits(biased.model, ctx.data.images, idx, ctx.device).argmax(1)
    biased_acc = (biased_pred == ctx.data.labels[idx]).mean()
    info.update({k: params[k] for k in ("q", "norm", "grad_scope", "mode", "init", "biased_width")})
    info.update(biased_model_train_acc=float(biased_acc), biased_model_seconds=biased.seconds, **measures,
                n_reweighted=int((h > 1.0 / len(idx)).sum()), importance_max_over_min=float(h.max() / h.min()),
                importance_normalised="over the whole training set (paper, Algorithm 1; learner.py:333-337)",
                **summary, **majority_vs_minority(ctx, model, summary["majority_groups"]))
    return MethodResult(model, np.zeros(0, np.int64), steps, info)


def majority_vs_minority(ctx: MethodContext, model: nn.Module, majority: list[str]) -> dict:
    """Validation accuracy of the selected model, averaged over the majority (bias-aligned)
    groups and over the other groups: the reversed-shortcut signature compares the two."""
    val = ctx.val_idx
    correct = predict_logits(model, ctx.data.images, val, ctx.device).argmax(1) == ctx.data.labels[val]
    groups = ctx.data.groups[val]
    acc = {ctx.data.group_names[g]: float(correct[groups == g].mean()) for g in np.unique(groups)}
    hi = [a for g, a in acc.items() if g in majority]
    lo = [a for g, a in acc.items() if g not in majority]
    return {"val_acc_majority_groups": float(np.mean(hi)) if hi else None,
            "val_acc_minority_groups": float(np.mean(lo)) if lo else None}
