"""DFR's last-layer fit on any number of classes (core/methods/dfr.py: fit_linear)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from core.methods.dfr import fit_linear, solver_name


def features(n_classes: int, n: int = 240, d: int = 12, seed: int = 0):
    """Classes separated along the first 2 of d features (the rest is noise), with a spurious
    group bit shifting feature 3; groups = (class, bit)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    bit = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)) * 0.5 + 10.0  # an offset: the raw-space fold must undo the scaler
    angles = 2 * np.pi * y / n_classes
    x[:, 0] += 3 * np.cos(angles)
    x[:, 1] += 3 * np.sin(angles)
    x[:, 2] += 2 * bit
    return x, y, 2 * y + bit


@pytest.mark.parametrize("n_classes", [3, 5])
def test_multinomial_l1_fit_separates_classes_and_drops_noise_features(n_classes):
    x, y, g = features(n_classes)
    w, b = fit_linear(x, y, g, n_classes, c=0.1, penalty="l1", n_draws=3, rng=np.random.default_rng(0))
    assert w.shape == (n_classes, x.shape[1]) and b.shape == (n_classes,)
    x_new, y_new, _ = features(n_classes, seed=1)
    assert ((x_new @ w.T + b).argmax(1) == y_new).mean() > 0.95
    noise = np.abs(w[:, 3:]).sum(axis=0)
    assert (noise == 0).mean() >= 0.5 and np.abs(w[:, :2]).sum(axis=0).min() > 0  # l1: noise mostly exactly 0
    w2, _ = fit_linear(x, y, g, n_classes, c=0.1, penalty="l2", n_draws=3, rng=np.random.default_rng(0))
    assert (w2[:, 3:] != 0).all()  # l2 shrinks, never zeroes
    assert solver_name("l1", n_classes) == "saga" and solver_name("l2", n_classes) == "lbfgs"


def test_binary_fit_is_one_decision_function_split_in_two_logits():
    x, y, g = features(2)
    w, b = fit_linear(x, y, g, 2, c=1.0, penalty="l1", n_draws=2, rng=np.random.default_rng(0))
    assert np.allclose(w[0], -w[1]) and np.isclose(b[0], -b[1])
    d = x @ (w[1] - w[0]) + (b[1] - b[0])
    assert np.allclose(softmax(x @ w.T + b, axis=1)[:, 1], 1 / (1 + np.exp(-d)))
    assert ((d > 0) == y).mean() > 0.95 and solver_name("l1", 2) == "liblinear"
