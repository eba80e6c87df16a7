"""TRAK on logistic regression, where it has a closed form (P = I), against exact references.

The model is a binary logistic regression fitted by scikit-learn and loaded into a 2-logit
linear layer (logits (0, wᵀx + b)); TRAK runs through the project's own path
(`core.attribution.trak.model_scores`: featurizer, feature store, Cholesky solve, streamed
scoring) with one model and no projection (k = 2(d + 1) ≥ the gradient's size).

1. The scores equal the TRAK formula written here from the fitted weights alone (also for a
   3-class softmax regression on the same features).
2. They predict actual leave-one-out refits: per target, the Pearson correlation over the n
   train examples between τ(z)_i and f(z; θ) - f(z; θ without i) is above THRESHOLD on
   average, and the same formula without (ΦᵀΦ)⁻¹ or without (1 - p_i) falls clearly below it.
3. They predict retraining on random halves (LDS 0.91; the wrong formulas 0.75 and 0.63).

The features are anisotropic (scales 0.6 to 0.03, rotated) so that the inverse matters, and
half of the targets lie near the data's centre, where the influence of an example is mostly
its residual (1 - p_i) rather than its position. The correlations are measurements on this
fixed problem (seed 0): 0.977 for TRAK, 0.741 without the inverse, 0.769 without (1 - p);
over seeds 0-5 TRAK stayed ≥ 0.949 and both wrong formulas ≤ 0.847.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from torch import nn

from core.attribution.factored import FactoredScores, Member
from core.attribution.lds import lds as core_lds
from core.attribution.trak import model_factors, model_scores
from core.config import TrakConfig

N, D, N_TARGETS = 100, 6, 6
C_REG = 1e4  # (almost) unregularised: TRAK's relative ridge is tiny too
THRESHOLD = 0.9  # mean LOO correlation TRAK must reach; wrong formulas must stay below THRESHOLD - 0.05
CFG = TrakConfig(n_models=1, projector="factored", scope="all", proj_dim=2 * (D + 1), ridge=1e-3,
                 batch_size=16, chunk_size=32)  # identity projection; several train/target chunks


@dataclass(frozen=True)
class Problem:
    images: np.ndarray  # uint8 (N + N_TARGETS, 1, 1, D): the features as the project reads images
    x: np.ndarray  # float64 features, exactly what the model sees
    y: np.ndarray

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[:N], self.y[:N]

    @property
    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[N:], self.y[N:]


@lru_cache(maxsize=None)
def make_problem(seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.6, 0.03, D)
    rotation = np.linalg.qr(rng.normal(size=(D, D)))[0]
    z = rng.normal(size=(N + N_TARGETS, D)) * scales
    z[N:N + N_TARGETS // 2] *= 0.1  # targets near the centre
    u = np.clip(np.round((z @ rotation.T / 4 + 0.5) * 255), 0, 255).astype(np.uint8)
    x = (u.astype(np.float32) / 255 - 0.5) / 0.25  # to_tensor's normalisation, in float32 as there
    w = rng.normal(size=D) / scales
    w = rotation @ (w / np.linalg.norm(w * scales) * 1.5)  # logit std 1.5 in every direction
    y = (x @ w + rng.logistic(size=len(x)) > 0).astype(np.int64)
    return Problem(u[:, None, None, :], x.astype(np.float64), y)


def fit_lr(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=C_REG, tol=1e-12, max_iter=100_000).fit(x, y)


def as_torch(lr: LogisticRegression) -> nn.Module:
    """The binary model as a 2-logit linear layer on the flattened image: logits (0, w·x + b)."""
    layer = nn.Linear(D, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[1] = torch.tensor(lr.coef_[0], dtype=torch.float32)
        layer.bias[1] = float(lr.intercept_[0])
    return nn.Sequential(nn.Flatten(), layer)


def project_trak(problem: Problem) -> np.ndarray:
    """The project's scores (targets x train) of the model fitted on all train examples."""
    model = as_torch(fit_lr(*problem.train)).eval()
    out = np.zeros((N_TARGETS, N), np.float32)
    with tempfile.TemporaryDirectory() as folder:
        model_scores(model, problem.images, problem.y, np.arange(N), np.arange(N, N + N_TARGETS), CFG,
                     seed=0, device=torch.device("cpu"), folder=Path(folder), out=out)
    return out


def reference(problem: Problem, inverse: bool = True, residual: bool = True) -> np.ndarray:
    """τ(z)_i = s_z s_i x̃_zᵀ (X̃ᵀX̃ + λ/2 I)⁻¹ x̃_i (1 - p_i) from the fitted weights alone.

    x̃ = (x, 1), s = ±1 the label's sign, p_i = σ(s_i (wᵀx_i + b)). The margin of the 2-logit
    model is s (wᵀx + b) of its (w_0 = 0, w_1 = w) weights, so the gradient over all 2(d + 1)
    parameters is s (-x̃, x̃): ΦᵀΦ = [[A, -A], [-A, A]] with A = X̃ᵀX̃, and on that subspace
    (ΦᵀΦ + λI)⁻¹ acts as (2A + λI)⁻¹; λ = ridge · trace(ΦᵀΦ) / k = ridge · trace(A) / (d + 1).
    `inverse=False` replaces the inverse by I, `residual=False` drops (1 - p_i): the two
    plausible wrong formulas.
    """
    (x, y), (xt, yt) = problem.train, problem.targets
    lr = fit_lr(x, y)
    s, st = np.where(y == 1, 1.0, -1.0), np.where(yt == 1, 1.0, -1.0)
    p = 1 / (1 + np.exp(-s * (x @ lr.coef_[0] + lr.intercept_[0])))
    xa, xta = np.c_[x, np.ones(N)], np.c_[xt, np.ones(N_TARGETS)]
    a = xa.T @ xa
    lam = CFG.ridge * np.trace(a) / (D + 1)
    h_inv_x = np.linalg.solve(a + lam / 2 * np.eye(D + 1), xa.T) if inverse else xa.T
    return st[:, None] * s[None, :] * (xta @ h_inv_x) * ((1 - p) if residual else 1.0)


@lru_cache(maxsize=None)
def leave_one_out(seed: int = 0) -> np.ndarray:
    """Actual f(z; θ) - f(z; θ without i), targets x train, from N refits."""
    problem = make_problem(seed)
    (x, y), (xt, yt) = problem.train, problem.targets
    st = np.where(yt == 1, 1.0, -1.0)
    full = st * fit_lr(x, y).decision_function(xt)
    return np.array([full - st * fit_lr(np.delete(x, i, 0), np.delete(y, i)).decision_function(xt)
                     for i in range(N)]).T


def loo_correlation(tau: np.ndarray, seed: int = 0) -> float:
    """Mean over targets of the Pearson correlation (over train examples) with actual LOO."""
    loo = leave_one_out(seed)
    return float(np.mean([np.corrcoef(tau[j], loo[j])[0, 1] for j in range(N_TARGETS)]))


def check_trak_equals_linear_formula() -> None:
    problem = make_problem()
    want = reference(problem)
    np.testing.assert_allclose(project_trak(problem), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def check_trak_predicts_leave_one_out() -> None:
    corr = loo_correlation(project_trak(make_problem()))
    assert corr > THRESHOLD, f"TRAK vs leave-one-out: mean correlation {corr:.3f} <= {THRESHOLD}"


def test_trak_equals_the_linear_formula():
    check_trak_equals_linear_formula()


def check_trak_equals_softmax_regression_formula() -> None:
    """Three classes: the margin f = w_yᵀx̃ - log Σ_{c≠y} exp(w_cᵀx̃) has the gradient
    e ⊗ x̃ with e_y = 1 and e_c = -softmax over the other classes' logits, so with Φ the
    stacked e_i ⊗ x̃_i, τ(z)_i = φ_zᵀ(ΦᵀΦ + λI)⁻¹φ_i(1 - p_i), p_i the softmax probability of y_i."""
    problem = make_problem()
    rng = np.random.default_rng(5)
    logits_true = problem.x @ rng.normal(scale=2.0, size=(D, 3))
    y = np.array([rng.choice(3, p=np.exp(row) / np.exp(row).sum()) for row in logits_true])
    lr = LogisticRegression(C=C_REG, tol=1e-12, max_iter=100_000).fit(problem.x[:N], y[:N])
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(lr.coef_, dtype=torch.float32))
        model[1].bias.copy_(torch.tensor(lr.intercept_, dtype=torch.float32))
    out = np.zeros((N_TARGETS, N), np.float32)
    cfg = replace(CFG, proj_dim=3 * (D + 1))
    with tempfile.TemporaryDirectory() as folder:
        model_scores(model, problem.images, y, np.arange(N), np.arange(N, N + N_TARGETS), cfg, seed=0,
                     device=torch.device("cpu"), folder=Path(folder), out=out)
    xa = np.c_[problem.x, np.ones(len(y))]
    logits = xa @ np.c_[lr.coef_, lr.intercept_].T
    p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))[np.arange(len(y)), y]
    others = np.where(np.arange(3) == y[:, None], -np.inf, logits)
    e = -np.exp(others - logsumexp(others, axis=1, keepdims=True))
    e[np.arange(len(y)), y] = 1.0
    phi = np.einsum("nc,nd->ncd", e, xa).reshape(len(y), -1)
    a = phi[:N].T @ phi[:N]
    a += cfg.ridge * np.trace(a) / len(a) * np.eye(len(a))
    want = phi[N:] @ np.linalg.solve(a, phi[:N].T) * (1 - p[:N])
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_trak_equals_the_softmax_regression_formula():
    check_trak_equals_softmax_regression_formula()


def test_trak_predicts_leave_one_out_and_wrong_formulas_do_not():
    check_trak_predicts_leave_one_out()
    problem = make_problem()
    assert loo_correlation(reference(problem)) > THRESHOLD + 0.05
    for wrong in ({"inverse": False}, {"residual": False}):
        corr = loo_correlation(reference(problem, **wrong))
        assert corr < THRESHOLD - 0.05, f"{wrong}: {corr:.3f} is not clearly below {THRESHOLD}"


@lru_cache(maxsize=None)
def subset_retraining(count: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(masks (count, N) bool of random halves, actual target margins (count, targets) of the
    model fitted on each half)."""
    problem = make_problem()
    (x, y), (xt, yt) = problem.train, problem.targets
    rng = np.random.default_rng(1)
    masks = np.array([rng.permutation(N) < N // 2 for _ in range(count)])
    sign = np.where(yt == 1, 1.0, -1.0)
    return masks, np.array([sign * fit_lr(x[m], y[m]).decision_function(xt) for m in masks])


def test_trak_predicts_subset_retraining_lds():
    """LDS over 40 random halves: predicted Σ_{i∈S} τ(z)_i vs the margin of a model fitted on S.

    Measured: 0.912 for TRAK, 0.754 without the inverse, 0.632 without (1 - p)."""
    problem = make_problem()
    masks, actual = subset_retraining()

    def lds(tau: np.ndarray) -> float:
        predicted = masks.astype(np.float64) @ tau.T  # (subsets, targets)
        return float(np.mean([spearmanr(predicted[:, j], actual[:, j])[0] for j in range(N_TARGETS)]))

    assert lds(project_trak(problem)) > 0.85
    assert max(lds(reference(problem, inverse=False)), lds(reference(problem, residual=False))) < 0.8


def test_factored_scores_keep_the_lds_and_wrong_scorers_do_not(tmp_path):
    """The analysis's path: τ kept as factors (model_factors, FactoredScores) and the LDS taken
    from them by core.attribution.lds, against the same actual refits on random halves. The exact
    scores stay above 0.85; the wrong formulas, through the same LDS code, below 0.8."""
    problem = make_problem()
    masks, actual = subset_retraining()
    model = as_torch(fit_lr(*problem.train)).eval()
    train, q = model_factors(model, problem.images, problem.y, np.arange(N), np.arange(N, N + N_TARGETS), CFG,
                             seed=0, device=torch.device("cpu"), folder=tmp_path)
    factored = FactoredScores([Member(q, train, 1.0)])
    assert core_lds(factored, masks, actual) > 0.85
    for wrong in ({"inverse": False}, {"residual": False}):
        assert core_lds(reference(problem, **wrong), masks, actual) < 0.8
