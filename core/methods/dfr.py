"""DFR, Deep Feature Reweighting (Kirichenko et al. 2023; seeds/001 appendix B.1).

Only the last layer of the analysis's ERM model (erm/model.pt) is retrained: a logistic
regression on its penultimate features (the input of the last nn.Linear), fitted on a
group-balanced subsample of one half of validation, averaged over `n_draws` balanced draws
as in DFR. The regularisation strength C is chosen on the other half of validation by
worst-group accuracy; the chosen classifier (features standardised on the fitting half, the
scaling folded into the weights) replaces the last layer. Every other parameter stays
bit-identical to the ERM model. Train group labels are never used (no/yes); nothing is
trained by SGD (steps = 0).

Any number of classes: with three or more the regression is multinomial (softmax over the
classes), solved by `saga` for the l1 penalty and `lbfgs` for l2 (SOLVERS); with two it is the
binary logistic regression solved by liblinear as before 2026-11-25 (unchanged results, and
about 30x faster than saga at these sizes; saga gave the same test WGA on the sample, README).

Params:
  seed      the validation split into halves and the balanced draws (default the analysis's)
  penalty   "l1" (DFR's choice, default) or "l2"
  c_grid    inverse regularisation strengths to try (default DFR's 1, .7, .3, .1, .07, .03, .01)
  n_draws   balanced subsamples averaged per fit (default 10)
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from core.train.checkpoints import load_checkpoint
from core.methods.base import MethodContext, MethodResult, register
from core.methods.options import Option
from core.methods.subg import balanced_subsample
from core.train.metrics import group_metrics
from core.methods.frozen import last_linear, penultimate

C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
SOLVERS = {"l1": "saga", "l2": "lbfgs"}  # multinomial-capable solvers of each penalty (>= 3 classes)
MAX_ITER = 5000


def split_halves(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions split into two halves with every group divided (as evenly as possible)."""
    first, second = [], []
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        first.append(members[:(len(members) + 1) // 2])
        second.append(members[(len(members) + 1) // 2:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def solver_name(penalty: str, n_classes: int) -> str:
    """liblinear for two classes (DFR's original solver); saga (l1) or lbfgs (l2), which fit the
    multinomial loss, for more."""
    return "liblinear" if n_classes == 2 else SOLVERS[penalty]


def solver(c: float, penalty: str, n_classes: int, rng: np.random.Generator) -> LogisticRegression:
    """The regression of one draw (saga and lbfgs seeded from `rng`: saga shuffles)."""
    name = solver_name(penalty, n_classes)
    l1_ratio = 1.0 if penalty == "l1" else 0.0
    if name == "liblinear":
        return LogisticRegression(C=c, l1_ratio=l1_ratio, solver=name, max_iter=1000)
    return LogisticRegression(C=c, l1_ratio=l1_ratio, solver=name, max_iter=MAX_ITER,
                              random_state=int(rng.integers(2**31)))


def fit_linear(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, c: float,
               penalty: str, n_draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Averaged logistic regressions on balanced draws -> (W (n_classes, d), b) acting on raw x.

    Each draw minimises the cross-entropy Σᵢ −log softmax(W zᵢ + b)_{yᵢ} plus ‖W‖₁/C (l1) or
    ‖W‖²/(2C) (l2) on standardised features z (two classes: one decision function, liblinear)."""
    if len(np.unique(y)) != n_classes:
        raise ValueError(f"DFR: the fitting half of validation lacks a class (classes present: {np.unique(y).tolist()})")
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    present, dense = np.unique(groups, return_inverse=True)
    coefs, intercepts = [], []
    for _ in range(n_draws):
        keep = balanced_subsample(dense.reshape(-1), len(present), rng)
        clf = solver(c, penalty, n_classes, rng)
        with warnings.catch_warnings():  # a draw stopped at MAX_ITER is still averaged (DFR averages draws)
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(z[keep], y[keep])
        coefs.append(clf.coef_)
        intercepts.append(clf.intercept_)
    w, b = np.mean(coefs, axis=0), np.mean(intercepts, axis=0)
    if n_classes == 2:  # one decision function d = w·z + b: logits ±d/2 give softmax = sigmoid(d)
        w, b = np.vstack([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    w_raw = w / scaler.scale_
    return w_raw, b - w_raw @ scaler.mean_


def wga(x: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str], w: np.ndarray, b: np.ndarray) -> float:
    return group_metrics((x @ w.T + b).argmax(1), y, groups, names)["wga"]


@register("dfr", "DFR (last-layer retraining)", group_info="no/yes", removes=False,
          trains_on="the last layer on group-balanced draws from half of validation; the other half picks C",
          options={"penalty": Option("l1", choices=("l1", "l2"), help="the regression's penalty (DFR: l1)"),
                   "c_grid": Option(list(C_GRID), gt=0, help="inverse regularisation strengths C to try"),
                   "n_draws": Option(10, ge=1, help="balanced subsamples averaged per fit")})
def dfr(ctx: MethodContext, params: dict) -> MethodResult:
    penalty, grid, n_draws = params["penalty"], params["c_grid"], params["n_draws"]
    rng = np.random.default_rng(30_000 + int(params.get("seed", ctx.cfg.train.seed)))
    model = load_checkpoint(ctx.analysis.file("erm/model.pt"), ctx.device)
    data, val = ctx.data, ctx.val_idx
    x, y, g = penultimate(model, data.images, val, ctx.device), data.labels[val], data.groups[val]
    fit_half, sel_half = split_halves(g, rng)
    sweep, best = [], None
    for c in grid:
        w, b = fit_linear(x[fit_half], y[fit_half], g[fit_half], data.n_classes, c, penalty, n_draws, rng)
        score = wga(x[sel_half], y[sel_half], g[sel_half], data.group_names, w, b)
        sweep.append({"C": c, "val_wga": score})
        if best is None or score > best[1]:
            best = (c, score, w, b)
    c, score, w, b = best
    head = last_linear(model)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))
    info = {"selected_C": c, "selected_by": "worst-group accuracy on the held-out half of validation",
            "selected_val_wga": score, "c_sweep": sweep, "penalty": penalty,
            "solver": solver_name(penalty, data.n_classes),
            "n_draws": n_draws, "n_val_fit": int(len(fit_half)), "n_val_select": int(len(sel_half))}
    return MethodResult(model, np.zeros(0, np.int64), 0, info)
