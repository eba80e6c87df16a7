"""TRAK against actual retraining on logistic regression (P = I, the closed-form case).

The linear datamodeling score (LDS) is the Spearman correlation, over random 50% subsets S,
between Σ_{i∈S} τ(z)_i and the margin on z of a model actually trained on S, averaged over
targets z. On this problem it reaches 0.94 (measured with these seeds); the test
asserts 0.8 so that it fails if scores lose their meaning, not on numerical noise.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from torch import nn

from core.attribution.gradients import FactoredFeaturizer
from core.attribution.scorer import gram, scores, solve_targets

N, D, C_REG = 200, 8, 1.0


def make_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=D)
    x = rng.normal(size=(N + 40, D)).astype(np.float32)
    y = (x @ w + rng.normal(scale=1.5, size=len(x)) > 0).astype(np.int64)
    return x[:N], y[:N], x[N:], y[N:]


def fit_lr(x, y) -> LogisticRegression:
    return LogisticRegression(C=C_REG, tol=1e-10, max_iter=10_000).fit(x, y)


def as_torch(lr: LogisticRegression) -> nn.Module:
    """The binary model as a 2-logit linear layer: logits (0, w·x + b)."""
    layer = nn.Linear(D, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[1] = torch.tensor(lr.coef_[0], dtype=torch.float32)
        layer.bias[1] = float(lr.intercept_[0])
    return nn.Sequential(layer)


def trak_scores(model: nn.Module, x, y, xt, yt) -> np.ndarray:
    feat = FactoredFeaturizer(model, "all", proj_dim=10_000, seed=0)  # identity projection: P = I
    g_train, p = feat(model, torch.from_numpy(x), torch.from_numpy(y))
    g_target, _ = feat(model, torch.from_numpy(xt), torch.from_numpy(yt))
    g_train = g_train.detach().numpy()
    q = solve_targets(gram(g_train), g_target.detach().numpy(), ridge=1e-3)
    return scores(q, g_train, p.detach().numpy())


def test_identity_projection_keeps_the_full_gradient():
    x, y, _, _ = make_problem()
    model = as_torch(fit_lr(x, y))
    feat = FactoredFeaturizer(model, "all", proj_dim=10_000, seed=0)
    assert feat.dim == 2 * (D + 1)


def test_trak_predicts_subset_retraining_lds():
    x, y, xt, yt = make_problem()
    tau = trak_scores(as_torch(fit_lr(x, y)), x, y, xt, yt)
    rng = np.random.default_rng(1)
    masks = np.array([rng.random(N) < 0.5 for _ in range(60)])
    predicted = masks.astype(np.float64) @ tau.T  # (subsets, targets)
    sign = np.where(yt == 1, 1.0, -1.0)
    actual = np.array([sign * fit_lr(x[m], y[m]).decision_function(xt) for m in masks])
    lds = np.nanmean([spearmanr(predicted[:, j], actual[:, j])[0] for j in range(len(yt))])
    assert lds > 0.8, f"LDS {lds:.3f}"


def test_trak_sign_matches_leave_one_out():
    """Removing the examples with the most negative τ(z) raises z's margin more than removing
    the most positive ones (the direction D3M relies on)."""
    x, y, xt, yt = make_problem()
    tau = trak_scores(as_torch(fit_lr(x, y)), x, y, xt, yt).mean(axis=0)
    sign = np.where(yt == 1, 1.0, -1.0)
    order = np.argsort(tau)
    keep_wo_neg, keep_wo_pos = np.ones(N, bool), np.ones(N, bool)
    keep_wo_neg[order[:20]] = False
    keep_wo_pos[order[-20:]] = False
    margin = lambda keep: (sign * fit_lr(x[keep], y[keep]).decision_function(xt)).mean()
    assert margin(keep_wo_neg) > margin(np.ones(N, bool)) > margin(keep_wo_pos)
