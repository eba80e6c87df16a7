"""Equation 3, the k rules, Auto-D3M's split and the subpopulation table on hand-made inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import selection


def test_alignment_matches_hand_computed_equation_3():
    scores = np.array([[1.0, -2.0, 0.0],
                       [3.0, -4.0, 2.0],
                       [-1.0, 1.0, 4.0],
                       [-3.0, 3.0, -2.0]])
    groups = np.array([0, 0, 1, 1])
    losses = np.array([0.0, np.log(3.0)])  # exp(β ℓ) = 1 and 3 with β = 1
    # τ(g0) = (2, -3, 1), τ(g1) = (-2, 2, 1); A = (1·τ(g0) + 3·τ(g1)) / 4
    expected = np.array([(2 - 6) / 4, (-3 + 6) / 4, (1 + 3) / 4])
    np.testing.assert_allclose(selection.alignment(scores, groups, losses, beta=1.0), expected)


def test_beta_interpolates_between_balanced_and_worst_group():
    rng = np.random.default_rng(0)
    scores, groups = rng.normal(size=(6, 5)), np.array([0, 0, 1, 1, 2, 2])
    losses = np.array([0.1, 2.0, 0.5])
    tau = selection.group_scores(scores, groups, 3)
    np.testing.assert_allclose(selection.alignment(scores, groups, losses, beta=0.0), tau.mean(axis=0))
    np.testing.assert_allclose(selection.alignment(scores, groups, losses, beta=200.0), tau[1], atol=1e-9)


def test_group_without_validation_examples_is_left_out():
    scores = np.array([[1.0, 2.0], [3.0, 4.0]])
    losses = np.array([0.5, np.nan, 0.5])
    np.testing.assert_allclose(selection.alignment(scores, np.array([0, 2]), losses), [2.0, 3.0])


def test_group_losses_are_mean_cross_entropy_per_group():
    logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
    losses = selection.group_losses(logits, np.array([0, 0, 1]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(losses, [-(np.log(0.5) + np.log(0.9)) / 2, -np.log(0.8)])


def test_k_rules():
    align = np.array([0.3, -0.1, -2.0, 0.0, -0.5])
    assert selection.default_k(align) == 3
    assert selection.most_negative(align, 2).tolist() == [2, 4]
    assert selection.most_negative(align, 0).tolist() == []
    with pytest.raises(ValueError, match="k = 9"):
        selection.most_negative(align, 9)


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_pseudo_groups_recover_a_planted_component(flip):
    """Class 1 has a planted direction: 35% of its rows sit at +u (and are hard), the rest at
    -u. The split must find exactly those rows whatever sign PCA returns."""
    rng = np.random.default_rng(0)
    n_train, per_class = 50, 40
    u = rng.normal(size=n_train)
    labels = np.repeat([0, 1], per_class)
    planted = np.zeros(2 * per_class, bool)
    planted[per_class + rng.choice(per_class, 14, replace=False)] = True  # 35% of class 1
    rows = rng.normal(scale=0.3, size=(2 * per_class, n_train))
    rows[labels == 1] += flip * np.where(planted[labels == 1], 3.0, -1.0)[:, None] * u
    losses = np.where(planted, 2.0, 0.2) + rng.normal(scale=0.05, size=len(labels))
    pg = selection.pseudo_groups(rows, labels, losses, ["a", "b"], fraction=0.35)
    low_side = pg.groups == 2
    assert (low_side == planted).all()
    assert (pg.groups[labels == 0] == 0).sum() == 14  # ceil(0.35 * 40) in every class
    assert pg.projection[planted].max() <= pg.thresholds[1] < pg.projection[labels == 1][~planted[labels == 1]].min()
    match = selection.pseudo_group_match(pg.groups, np.where(planted, 1, 0) + 2 * labels, labels,
                                         pg.names, ["a0", "a1", "b0", "b1"])
    assert match["ari_per_class"][1] == pytest.approx(1.0)


def test_subpopulations_mean_and_count_per_cell():
    meta = pd.DataFrame({"colour": ["red", "red", "blue", "red"], "size": ["s", "l", "s", "s"]})
    table = selection.subpopulations(np.array([-1.0, -3.0, 2.0, 5.0]), np.array([0, 0, 0, 1]),
                                     meta, ["colour", "size"], ["cat", "dog"])
    cell = table[(table.attribute == "colour") & (table.value == "red") & (table["class"] == "cat")].iloc[0]
    assert cell.mean_alignment == -2.0 and cell["count"] == 2
    assert table.iloc[0].mean_alignment == table.mean_alignment.min()  # most negative first
    assert len(table) == 3 + 3
