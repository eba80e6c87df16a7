"""Group metrics against values computed by hand (binary and three-class)."""
from __future__ import annotations

import numpy as np
import pytest

from core.train.metrics import group_mean, group_metrics


def check_group_metrics_by_hand() -> None:
    # three classes of 4, 2 and 2 examples; groups: class x (a | b), group "2b" absent
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 2, 1])
    groups = np.array([0, 0, 1, 1, 2, 3, 4, 4])
    m = group_metrics(preds, labels, groups, ["0a", "0b", "1a", "1b", "2a", "2b"])
    assert m["per_group"] == {"0a": 1.0, "0b": 0.5, "1a": 1.0, "1b": 0.0, "2a": 0.5}
    assert m["group_counts"] == {"0a": 2, "0b": 2, "1a": 1, "1b": 1, "2a": 2}
    assert (m["wga"], m["worst_group"]) == (0.0, "1b")
    assert m["acc"] == pytest.approx(5 / 8)
    assert m["balanced_acc"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)  # mean recall per class
    # F1 per class: 2TP / (2TP + FP + FN): class 0: 6/8, class 1: 2/5, class 2: 2/3
    assert m["macro_f1"] == pytest.approx((6 / 8 + 2 / 5 + 2 / 3) / 3)
    binary = group_metrics(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 0, 0]), np.array([1, 0, 0, 0, 0]), ["n", "p"])
    assert (binary["acc"], binary["wga"], binary["balanced_acc"]) == (pytest.approx(0.6), 0.5, pytest.approx(0.75))


def test_group_metrics_by_hand():
    check_group_metrics_by_hand()


def test_group_mean_leaves_empty_groups_nan():
    np.testing.assert_allclose(group_mean(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 2]), 3), [2.0, np.nan, 5.0])
