"""Equation 3, the k rules, Auto-D3M's split and the subpopulation table on hand-made inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.methods import selection


def check_alignment_hand_case() -> None:
    scores = np.array([[1.0, -2.0, 0.0],
                       [3.0, -4.0, 2.0],
                       [-1.0, 1.0, 4.0],
                       [-3.0, 3.0, -2.0]])
    groups = np.array([0, 0, 1, 1])
    losses = np.array([0.0, np.log(3.0)])  # exp(β ℓ) = 1 and 3 with β = 1
    # τ(g0) = (2, -3, 1), τ(g1) = (-2, 2, 1); A = (1·τ(g0) + 3·τ(g1)) / 4
    expected = np.array([(2 - 6) / 4, (-3 + 6) / 4, (1 + 3) / 4])
    np.testing.assert_allclose(selection.alignment(scores, groups, losses, beta=1.0), expected)
    # β = 2: weights exp(2 ℓ) = 1 and 9
    np.testing.assert_allclose(selection.alignment(scores, groups, losses, beta=2.0),
                               [(2 - 18) / 10, (-3 + 18) / 10, (1 + 9) / 10])


def check_beta_limits() -> None:
    """β = 0: the plain mean of the group means; β large: the worst group's mean alone."""
    rng = np.random.default_rng(0)
    scores, groups = rng.normal(size=(7, 5)), np.array([0, 0, 0, 1, 1, 2, 2])
    losses = np.array([0.1, 2.0, 0.5])
    means = np.array([scores[:3].mean(0), scores[3:5].mean(0), scores[5:].mean(0)])  # by hand
    np.testing.assert_allclose(selection.alignment(scores, groups, losses, beta=0.0), means.mean(0))
    np.testing.assert_allclose(selection.alignment(scores, groups, losses, beta=200.0), means[1], atol=1e-9)
    assert not np.allclose(means.mean(0), scores.mean(0))  # group sizes differ: not the row mean


def test_alignment_matches_hand_computed_equation_3():
    check_alignment_hand_case()


def test_beta_interpolates_between_balanced_and_worst_group():
    check_beta_limits()


def test_group_without_validation_examples_is_left_out():
    scores = np.array([[1.0, 2.0], [3.0, 4.0]])
    losses = np.array([0.5, np.nan, 0.5])
    np.testing.assert_allclose(selection.alignment(scores, np.array([0, 2]), losses), [2.0, 3.0])


def check_group_losses() -> None:
    logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
    losses = selection.group_losses(logits, np.array([0, 0, 1]), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(losses, [-(np.log(0.5) + np.log(0.9)) / 2, -np.log(0.8)])


def test_group_losses_are_mean_cross_entropy_per_group():
    check_group_losses()


def check_k_rules() -> None:
    align = np.array([0.3, -0.1, -2.0, 0.0, -0.5])
    assert selection.default_k(align) == 3
    assert selection.most_negative(align, 2).tolist() == [2, 4]
    assert selection.most_negative(align, 3).tolist() == [1, 2, 4]
    assert selection.most_negative(align, 0).tolist() == []


def test_k_rules():
    check_k_rules()
    with pytest.raises(ValueError, match="k = 9"):
        selection.most_negative(np.zeros(5), 9)


def check_planted_component(flip: float) -> None:
    """Three classes; classes 1 and 2 each have a planted direction: 35% of their rows sit at
    +u_c (and are hard), the rest at -u_c. The split must find exactly those rows whatever
    sign PCA returns, and put ceil(35%) of every class on its low side."""
    rng = np.random.default_rng(0)
    n_train, per_class = 50, 40
    labels = np.repeat([0, 1, 2], per_class)
    planted = np.zeros(len(labels), bool)
    rows = rng.normal(scale=0.3, size=(len(labels), n_train))
    for c in (1, 2):
        members = np.flatnonzero(labels == c)
        hard = rng.choice(members, 14, replace=False)  # 35% of the class
        planted[hard] = True
        rows[members] += flip * np.where(planted[members], 3.0, -1.0)[:, None] * rng.normal(size=n_train)
    losses = np.where(planted, 2.0, 0.2) + rng.normal(scale=0.05, size=len(labels))
    pg = selection.pseudo_groups(rows, labels, losses, ["a", "b", "c"], fraction=0.35)
    low_side = pg.groups == 2 * labels
    assert (low_side[labels > 0] == planted[labels > 0]).all()
    assert (pg.groups == 2 * labels + 1 - low_side).all()
    assert [int(low_side[labels == c].sum()) for c in range(3)] == [14, 14, 14]  # ceil(0.35 * 40)
    for c in (1, 2):
        in_c = labels == c
        assert pg.projection[in_c & planted].max() <= pg.thresholds[c] < pg.projection[in_c & ~planted].min()
    match = selection.pseudo_group_match(pg.groups, planted + 2 * labels, labels,
                                         pg.names, ["a0", "a1", "b0", "b1", "c0", "c1"])
    assert match["ari_per_class"][1] == pytest.approx(1.0) and match["ari_per_class"][2] == pytest.approx(1.0)


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_pseudo_groups_recover_a_planted_component(flip):
    check_planted_component(flip)


def test_subpopulations_mean_and_count_per_cell():
    meta = pd.DataFrame({"colour": ["red", "red", "blue", "red"], "size": ["s", "l", "s", "s"]})
    table = selection.subpopulations(np.array([-1.0, -3.0, 2.0, 5.0]), np.array([0, 0, 0, 1]),
                                     meta, ["colour", "size"], ["cat", "dog"])
    cell = table[(table.attribute == "colour") & (table.value == "red") & (table["class"] == "cat")].iloc[0]
    assert cell.mean_alignment == -2.0 and cell["count"] == 2
    assert table.iloc[0].mean_alignment == table.mean_alignment.min()  # most negative first
    assert len(table) == 3 + 3
