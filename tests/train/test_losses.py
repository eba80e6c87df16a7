"""The seed methods' losses (core/train/losses.py), each against an independent computation."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from core.train.losses import consistency, diversity, gce, mutual_information, svd_share


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)


def test_gce_tends_to_cross_entropy_as_q_falls(batch):
    logits, y = batch
    ce = F.cross_entropy(logits, y, reduction="none")
    gaps = [float((gce(logits, y, q, reduction="none") - ce).abs().max()) for q in (0.5, 0.1, 1e-2, 1e-4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3 * float(ce.max())
    p_y = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(gce(logits, y, 1.0, reduction="none"), 1 - p_y)  # q = 1: MAE
    assert torch.allclose(gce(logits, y, 0.7, reduction="none"), (1 - p_y ** 0.7) / 0.7)


def test_gce_gradient_is_ce_gradient_times_p_to_the_q(batch):
    """The defining property that makes GCE emphasise easy examples: ∇L_GCE = p_y^q ∇L_CE."""
    logits, y = batch
    z1, z2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    gce(z1, y, 0.7, reduction="none").sum().backward()
    F.cross_entropy(z2, y, reduction="none").sum().backward()
    p_y = F.softmax(logits, 1).gather(1, y[:, None])
    assert torch.allclose(z1.grad, p_y ** 0.7 * z2.grad)
    with pytest.raises(ValueError, match="GCE q must be in"):
        gce(logits, y, 0.0)


def test_mutual_information_zero_when_independent_and_entropy_when_exact():
    b = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    other = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])  # independent of b in this batch
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)[other]
    assert float(mutual_information(b, probs, 2)) == pytest.approx(0.0, abs=1e-9)
    skewed = torch.tensor([0, 0, 0, 1, 2, 2])
    exact = F.one_hot(skewed, 3).double()
    freq = torch.bincount(skewed).double() / len(skewed)
    assert float(mutual_information(skewed, exact, 3)) == pytest.approx(float(-(freq * freq.log()).sum()), rel=1e-6)
    # a noisy head sits strictly between
    noisy = 0.7 * exact + 0.1
    assert 0 < float(mutual_information(skewed, noisy, 3)) < float(mutual_information(skewed, exact, 3))


def test_mutual_information_matches_a_direct_sum():
    g = torch.Generator().manual_seed(1)
    b = torch.randint(0, 3, (20,), generator=g)
    probs = F.softmax(torch.randn(20, 3, generator=g, dtype=torch.float64), 1)
    joint = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(20):
        joint[b[i]] += probs[i] / 20
    pb, ph = joint.sum(1), joint.sum(0)
    expected = sum(float(joint[i, j] * math.log(joint[i, j] / (pb[i] * ph[j])))
                   for i in range(3) for j in range(3) if joint[i, j] > 0)
    assert float(mutual_information(b, probs, 3)) == pytest.approx(expected, rel=1e-9)


def test_consistency_is_normalised_mse_or_kl_and_zero_when_outputs_agree(batch):
    logits, _ = batch
    other = logits.flip(0)
    for kind in ("mse", "kl"):
        assert float(consistency(logits, logits, kind)) == pytest.approx(0.0, abs=1e-12)
    a = logits / logits.norm(dim=1, keepdim=True)  # official NLU form: MSE of the L2-normalised logits
    b = other / other.norm(dim=1, keepdim=True)
    assert float(consistency(logits, other)) == pytest.approx(float(((a - b) ** 2).mean()), rel=1e-9)
    assert float(consistency(2 * logits, logits)) == pytest.approx(0.0, abs=1e-12)  # scale-free
    p, log_q = F.softmax(other, 1), F.log_softmax(logits, 1)
    expected = (p * (p.log() - log_q)).sum(1).mean()
    assert float(consistency(logits, other, "kl")) == pytest.approx(float(expected), rel=1e-9) and expected > 0
    with pytest.raises(ValueError, match="consistency kind must be 'mse' or 'kl'"):
        consistency(logits, other, "l1")


def test_diversity_zero_for_uncorrelated_outputs_and_covariance_otherwise():
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert float(diversity(signs + 5)) == pytest.approx(0.0, abs=1e-12)  # centred columns orthogonal
    col = torch.tensor([1.0, 2.0, 4.0, 7.0], dtype=torch.float64)
    same = torch.stack([col, col, -col], 1)
    cov = float(col.var())  # off-diagonal entries: ±var (6 of them)
    assert float(diversity(same)) == pytest.approx(6 * cov ** 2 / 3)  # Σ_{i≠j} C_ij² / d, d = 3
    assert float(diversity(col[:, None])) == 0.0  # one output: no off-diagonal entry


def test_svd_share_reaches_its_optimum_at_rank_k():
    g = torch.Generator().manual_seed(2)
    u, v = torch.randn(10, 2, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    assert float(svd_share(u @ v, k=2)) == pytest.approx(-1.0)
    assert float(svd_share(u[:, :1] @ v[:1], k=1)) == pytest.approx(-1.0)
    assert float(svd_share(torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)), k=1)) == pytest.approx(-0.75)
    assert float(svd_share(u @ v, k=1)) > -1.0
    assert float(svd_share(u @ v)) == pytest.approx(-1.0)  # the official k = 3 >= rank 2
