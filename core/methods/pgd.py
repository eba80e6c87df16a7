"""PGD, Per-sample Gradient-based Debiasing (Ahn, Kim, Yun; ICLR 2023; seeds/000).

1. A biased model f_b trained with uniform batches and the generalized cross-entropy
   (core.train.losses.gce, option `q`), on the ERM step budget. With `biased_width` < 1 it is a
   narrower copy of the architecture (channel widths divided by 1/biased_width; small_cnn).
2. Importance of each training example, Algorithm 1 of the paper:

       h(x_i, y_i) = ||∇θ L_CE(f_b(x_i), y_i)||_r / Σ_{j ∈ D} ||∇θ L_CE(f_b(x_j), y_j)||_r

   normalised over the whole training set D, not per class: the paper's Algorithm 1 sums over
   D and the authors' code (github sumyeongahn/PGD, trainer/learner.py) divides by the global
   sum. θ = the final layer (`grad_scope` = fc, the paper's choice: weight and bias) or every
   linear/conv layer (all); r = `norm` (l1 | l2 | linf). The per-example gradients come from
   the project's own machinery (core/attribution/gradients.py: one backward per batch, hooks,
   Σ_l δ_l a_lᵀ) for the margin m = log p_y/(1-p_y); since ∇ log p_y = (1 - p_y) ∇m, the
   cross-entropy gradient is -(1 - p_y) ∇m, exactly. Step 2's time and peak memory go to info.
3. A fresh full-width model trained on the ERM step budget with batches drawn with probability
   h (`mode` = resample) or with the per-example loss weighted by N·h (reweight), its epoch
   chosen by validation worst-group accuracy (no/yes: train groups are never used to train;
   the per-group share of h in info is a diagnostic only).
"""
from __future__ import annotations

import resource
import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.attribution.gradients import capture, layer_grads, layer_inputs, scoped_layers, true_class_prob
from core.attribution.trak import proxy_model_config
from core.train.losses import gce
from core.methods.base import MethodContext, MethodResult, register
from core.methods.options import Option
from core.methods.selection_by_val import fit_selected
from core.progress import scaled
from core.train.training import fit, predict_logits
from core.data.images import to_tensor

NORMS = ("l1", "l2", "linf")
SCOPES = {"fc": "last", "all": "all"}
WIDTHS = (1.0, 0.5, 0.25)
MODES = ("resample", "reweight")


def ce_grad_norms(model: nn.Module, images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
                  device: torch.device, scope: str = "fc", norm: str = "l2", batch_size: int = 32
                  ) -> tuple[np.ndarray, int]:
    """||∇θ CE(f(x_i), y_i)||_norm for examples idx (model in eval mode), and the largest
    per-example gradient block formed (bytes). θ: the final layer (fc) or all linear/conv layers."""
    layers = scoped_layers(model, SCOPES[scope])
    labels_t = torch.tensor(np.asarray(labels), dtype=torch.int64)
    model.eval().to(device)
    out, block = [], 0
    for start in range(0, len(idx), batch_size):
        batch = idx[start:start + batch_size]
        x, y = to_tensor(images[batch], device), labels_t[batch].to(device)
        xs, delta, logits = capture(model, layers, x, y)
        acc = torch.zeros(len(batch), device=device, dtype=torch.float64)
        for (_, m), x_i, d_i in zip(layers, xs, delta):
            g = layer_grads(layer_inputs(m, x_i), d_i).flatten(1)  # margin gradients (B, params)
            block = max(block, g.numel() * g.element_size())
            acc = (acc + g.abs().sum(1, dtype=torch.float64) if norm == "l1"
                   else acc + (g * g).sum(1, dtype=torch.float64) if norm == "l2"
                   else torch.maximum(acc, g.abs().amax(1).double()))
        scale = 1.0 - true_class_prob(logits, y).double()  # |∇CE| = (1 - p_y) |∇ margin|
        out.append((scale * (acc.sqrt() if norm == "l2" else acc)).cpu())
    return torch.cat(out).numpy(), block


def importance(norms: np.ndarray) -> np.ndarray:
    """h_i = ||g_i|| / Σ_j ||g_j|| over the whole training set (norms clamped at 1e-8 as in the
    authors' code, so that no example has probability 0)."""
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
    if width < 1 and ctx.cfg.model.arch != "small_cnn":
        raise ValueError(f"PGD biased_width={width} needs arch small_cnn (narrower copies), not {ctx.cfg.model.arch!r}")
    return replace(ctx.cfg, model=proxy_model_config(ctx.cfg.model, round(1 / width)))


@register("pgd", "PGD (per-sample gradient debiasing)", group_info="no/yes", removes=False,
          options={"q": Option(0.7, gt=0, le=1, help="q of the biased model's generalized cross-entropy"),
                   "norm": Option("l2", choices=NORMS, help="r of the gradient norm ||∇θ L||_r"),
                   "grad_scope": Option("fc", choices=tuple(SCOPES), help="θ: the final layer (fc) or every layer"),
                   "mode": Option("resample", choices=MODES, help="draw batches with probability h, or weight "
                                                                  "the loss by N·h"),
                   "biased_width": Option(1.0, choices=WIDTHS, help="the biased model's channel width "
                                                                    "(< 1: small_cnn only)")})
def pgd(ctx: MethodContext, params: dict) -> MethodResult:
    q, norm, scope, mode = params["q"], params["norm"], params["grad_scope"], params["mode"]
    cfg_b = biased_config(ctx, params["biased_width"])
    idx = ctx.train_idx
    biased = fit(ctx.data, idx, cfg_b, ctx.recipe(params), ctx.device, scaled(ctx.report, "PGD biased model: "),
                 loss_fn=lambda logits, y, _ids: gce(logits, y, q))
    ctx.report("PGD per-example gradients", 0, 1)
    norms, measures = measured_norms(biased.model, ctx, scope, norm)
    h = importance(norms)
    if mode == "resample":
        hooks = {"sample_probs": h}
    else:
        by_id = np.zeros(len(ctx.data.labels))
        by_id[idx] = h * len(idx)
        hooks = {"loss_fn": weighted_ce(by_id)}
    model, steps, info = fit_selected(ctx, idx, params, "PGD debiased model: ", **hooks)
    biased_pred = predict_logits(biased.model, ctx.data.images, idx, ctx.device).argmax(1)
    biased_acc = (biased_pred == ctx.data.labels[idx]).mean()
    groups, names = ctx.data.groups[idx], ctx.data.group_names
    info.update(q=q, norm=norm, grad_scope=scope, mode=mode, biased_width=params["biased_width"],
                biased_model_train_acc=float(biased_acc), biased_model_seconds=biased.seconds, **measures,
                n_reweighted=int((h > 1.0 / len(idx)).sum()), importance_max_over_min=float(h.max() / h.min()),
                importance_share_by_group={names[g]: float(h[groups == g].sum()) for g in np.unique(groups)},
                importance_normalised="over the whole training set (paper, Algorithm 1)")
    return MethodResult(model, np.zeros(0, np.int64), steps, info)
