"""Each random projection keeps inner products within the Johnson-Lindenstrauss error.

For a projection with E[P Pᵀ] = I and k outputs, ⟨Px, Py⟩ - ⟨x, y⟩ has standard deviation
about √((‖x‖²‖y‖² + ⟨x, y⟩²)/k) (Gaussian; the sparse sign sketch is at most √2 times that).
The tests check the mean error over many pairs against that scale (so a wrong scaling such as
a missing 1/√k fails) and that the errors are not all zero (so an identity slip fails).
"""
from __future__ import annotations

import math

import pytest
import torch

from core.attribution.projectors import DenseProjector, KroneckerProjector, SparseProjector

P_IN, K, PAIRS = 3000, 512, 64


def pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated unit-norm pairs (⟨x, y⟩ ≈ 0.6), so both the norm and the angle are tested."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(PAIRS, P_IN, generator=gen)
    y = 0.6 * x + 0.8 * torch.randn(PAIRS, P_IN, generator=gen)
    return x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)


def check_jl(project, x: torch.Tensor, y: torch.Tensor, k: int, slack: float) -> None:
    exact = (x * y).sum(1)
    err = (project(x) * project(y)).sum(1) - exact
    scale = math.sqrt((1 + exact.pow(2).mean().item()) / k)
    rms = err.pow(2).mean().sqrt().item()
    assert rms < slack * scale, f"rms error {rms:.4f} vs JL scale {scale:.4f}"
    assert rms > 0.2 * scale, "no projection noise at all: is the projection the identity?"
    assert abs(err.mean().item()) < 4 * scale / math.sqrt(PAIRS) + 1e-6, "biased inner products"


def test_dense_gaussian_keeps_inner_products():
    x, y = pairs()
    check_jl(DenseProjector(P_IN, K, seed=3), x, y, K, slack=1.5)


@pytest.mark.parametrize("nnz", [1, 4])
def test_sparse_sign_keeps_inner_products(nnz):
    x, y = pairs()
    check_jl(SparseProjector(P_IN, K, seed=3, nnz=nnz), x, y, K, slack=2.0)


def test_sparse_projection_is_linear_and_accumulates():
    x, y = pairs()
    proj = SparseProjector(P_IN, K, seed=1)
    assert torch.allclose(proj(x + 2 * y), proj(x) + 2 * proj(y), atol=1e-5)
    out = proj(x)
    proj(y, out=out)
    assert torch.allclose(out, proj(x + y), atol=1e-5)


def test_projections_are_seeded():
    x, _ = pairs()
    assert torch.equal(SparseProjector(P_IN, K, 5)(x), SparseProjector(P_IN, K, 5)(x))
    assert not torch.equal(SparseProjector(P_IN, K, 5)(x), SparseProjector(P_IN, K, 6)(x))
    assert torch.equal(DenseProjector(P_IN, K, 5)(x), DenseProjector(P_IN, K, 5, cache_mb=0)(x))


def test_kronecker_keeps_inner_products_of_outer_products():
    """A Kronecker projection of vec(δ aᵀ) keeps ⟨G, G'⟩ for rank-1 G = δaᵀ, G' = δa'ᵀ.

    The estimate is the product of two independent JL estimates, ⟨P_outᵀδ, P_outᵀδ⟩ (mean 1,
    variance 2/k_out) and ⟨P_inᵀa, P_inᵀa'⟩ (mean ρ, variance (1+ρ²)/k_in), so its error is set
    by k_in and k_out, not by their product (LoGra's cost for never forming G).
    """
    d_out, d_in, k = 40, 75, 256
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(PAIRS, 1, d_in, generator=gen)
    a2 = 0.6 * a + 0.8 * torch.randn(PAIRS, 1, d_in, generator=gen)
    a, a2 = a / a.norm(dim=2, keepdim=True), a2 / a2.norm(dim=2, keepdim=True)
    d = torch.randn(PAIRS, 1, d_out, generator=gen)
    d = d / d.norm(dim=2, keepdim=True)
    proj = KroneckerProjector.make(d_in, d_out, k, seed=2)
    k_in, k_out = proj.p_in.shape[1], proj.p_out.shape[1]
    assert (k_in, k_out) == (16, 16)
    rho = (a * a2).sum((1, 2))
    err = (proj(a, d) * proj(a2, d)).sum(1) - rho
    expected = ((1 + 2 / k_out) * (rho**2 + (1 + rho**2) / k_in) - rho**2).mean().sqrt()
    rms = err.pow(2).mean().sqrt()
    assert 0.5 * expected < rms < 1.5 * expected, f"rms error {rms:.4f}, expected {expected:.4f}"
    assert abs(err.mean()) < 4 * expected / math.sqrt(PAIRS)
