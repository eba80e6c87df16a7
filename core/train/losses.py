"""Losses and regularisers of the seed methods (PGD, FFW, BA-LoRA), each a small function.

Every function takes logits/outputs of one batch and returns a scalar tensor (or one value per
example where the docstring says so), differentiable where the method trains through it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def gce(logits: torch.Tensor, y: torch.Tensor, q: float = 0.7, reduction: str = "mean") -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018), PGD's biased-model loss:

        L_GCE(p, y) = (1 - p_y^q) / q,   0 < q <= 1.

    Its gradient is p_y^q times the cross-entropy gradient, so confident (easy, bias-aligned)
    examples weigh more and the model learns the shortcut faster. As q -> 0 it tends to the
    cross-entropy -log p_y (q = 1 gives the MAE 1 - p_y). The log-domain form
    -expm1(q log p_y) / q keeps small q exact.
    """
    if not 0 < q <= 1:
        raise ValueError(f"GCE q must be in (0, 1], got {q}")
    log_p = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    loss = -torch.expm1(q * log_p) / q
    return loss.mean() if reduction == "mean" else loss


def mutual_information(b: torch.Tensor, probs: torch.Tensor, n_values: int, eps: float = 1e-12) -> torch.Tensor:
    """Empirical mutual information I(b; b̂) over a batch (FFW's bias term), in nats:

        P(b, b̂) = (1/B) Σ_i 1[b_i = b] q_i(b̂),   I = Σ_{b, b̂} P(b, b̂) log P(b, b̂) / (P(b) P(b̂)),

    with q_i the bias head's predicted distribution for example i (soft, so it is
    differentiable) and P(b), P(b̂) the marginals. It is 0 when the head's output does not
    depend on the true bias value and reaches H(b) when the head recovers b exactly.
    """
    joint = F.one_hot(b, n_values).to(probs.dtype).T @ probs / len(b)  # (values of b, values of b̂)
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    return (joint * (torch.log(joint + eps) - torch.log(outer + eps))).sum()


def consistency(adapted_logits: torch.Tensor, base_logits: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """BA-LoRA's consistency regulariser, 0 exactly when the adapted and base outputs agree.

    kind = mse (the official code's classification / NLU form, train.py:217-220): the mean
    squared difference of the L2-normalised logits, mean((z/|z| - z₀/|z₀|)²) over the batch
    and classes; kind = kl (its generation / NLG form): the batch mean of
    KL(p_base || p_adapted) = Σ_c p_base,c (log p_base,c - log p_adapted,c)."""
    if kind == "mse":
        return F.mse_loss(F.normalize(adapted_logits, p=2, dim=-1), F.normalize(base_logits, p=2, dim=-1))
    if kind == "kl":
        return F.kl_div(F.log_softmax(adapted_logits, 1), F.log_softmax(base_logits, 1),
                        reduction="batchmean", log_target=True)
    raise ValueError(f"consistency kind must be 'mse' or 'kl', got {kind!r}")


def diversity(outputs: torch.Tensor) -> torch.Tensor:
    """BA-LoRA's diversity regulariser (the official NLU form, train.py:222-228): the squared
    off-diagonal covariance of the outputs over the batch, divided by the dimension,

        C = (1/(B-1)) (Z - Z̄)ᵀ (Z - Z̄),   R_div = Σ_{i≠j} C_ij² / d,

    Z (B, d) the batch's outputs. It is 0 when the output dimensions are uncorrelated over
    the batch (no collapse onto one direction); d = 1 has no off-diagonal entry (0)."""
    d = outputs.shape[1]
    if d < 2 or outputs.shape[0] < 2:
        return outputs.sum() * 0.0
    z = outputs - outputs.mean(0, keepdim=True)
    cov = z.T @ z / (outputs.shape[0] - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return (off ** 2).sum() / d


def svd_share(outputs: torch.Tensor, k: int = 3) -> torch.Tensor:
    """BA-LoRA's SVD regulariser, to be minimised (train.py:265-296): minus the share of the
    top-k singular values of the batch output matrix Z (B, d),

        R_svd = - Σ_{i<=min(k, r)} σ_i / (Σ_i σ_i + 1e-10),   r = min(B, d) singular values.

    Its optimum -1 is reached when Z has rank <= k (the paper: favour robust low-rank outputs);
    with k >= min(B, d) it is the constant -1 (no gradient)."""
    if k < 1:
        raise ValueError(f"svd_k must be >= 1, got {k}")
    s = torch.linalg.svdvals(outputs)
    return -s[:k].sum() / (s.sum() + 1e-10)


def cross_entropy_np(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy from logits (numerically stable)."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]
