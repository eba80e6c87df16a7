"""Featurizers against explicit per-example gradients (torch.func) on a tiny conv + MLP net.

The factored (hook) gradient of a Linear/Conv2d layer must be exactly the per-example
gradient (identity projections), and with projections exactly P_outᵀ G P_in; the sparse
featurizer must be exactly its sketch of G; every projector must honour every gradient scope.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.attribution.gradients import (FEATURIZERS, FactoredFeaturizer, SparseFeaturizer, make_featurizer,
                                        per_example_grads, scoped_layers)

B = 6


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 6), nn.Tanh(), nn.Linear(6, 3)).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(B, 3, 5, 5, generator=gen), torch.randint(0, 3, (B,), generator=gen)


def explicit(model: nn.Module, scope: str) -> list[torch.Tensor]:
    """Per layer in scope: the explicit gradient as (B, d_out, d_in [+ bias column])."""
    x, y = batch()
    layers = scoped_layers(model, scope)
    grads = per_example_grads(model, x, y, [f"{n}.{p}" for n, m in layers for p in ("weight", "bias")])
    return [torch.cat([grads[f"{n}.weight"].reshape(B, m.weight.shape[0], -1), grads[f"{n}.bias"][:, :, None]], 2)
            for n, m in layers]


def test_factored_identity_equals_explicit_gradient():
    model = tiny_net()
    feat = FactoredFeaturizer(model, "all", proj_dim=10**6, seed=0)
    assert all(p.p_in is None and p.p_out is None for p in feat.projectors)
    g, _ = feat(model, *batch())
    want = torch.cat([e.reshape(B, -1) for e in explicit(model, "all")], 1)
    assert g.shape == want.shape
    torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6)


def test_factored_projection_equals_projected_explicit_gradient():
    model = tiny_net()
    feat = FactoredFeaturizer(model, "all", proj_dim=48, seed=3)
    assert any(p.p_in is not None for p in feat.projectors)  # conv and fc1 inputs are projected
    g, _ = feat(model, *batch())
    parts = []
    for proj, e in zip(feat.projectors, explicit(model, "all")):
        if proj.p_out is not None:
            e = proj.p_out.T @ e
        if proj.p_in is not None:
            e = e @ proj.p_in
        parts.append(e.reshape(B, -1))
    torch.testing.assert_close(g, torch.cat(parts, 1), rtol=1e-4, atol=1e-6)


def test_sparse_featurizer_equals_sketch_of_explicit_gradient():
    model = tiny_net()
    feat = SparseFeaturizer(model, "all", proj_dim=64, seed=2)
    g, p = feat(model, *batch())
    want = torch.zeros(B, 64)
    for proj, e in zip(feat.projectors, explicit(model, "all")):
        proj(e.reshape(B, -1), out=want)
    torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6)
    x, y = batch()
    torch.testing.assert_close(p, torch.softmax(model(x), 1)[torch.arange(B), y])


@pytest.mark.parametrize("projector", sorted(FEATURIZERS))
@pytest.mark.parametrize("scope", ["all", "last:2", "last"])
def test_every_projector_honours_every_scope(projector, scope):
    """Feature inner products ≈ the explicit gradients' of exactly the scoped layers."""
    model = tiny_net()
    feat = make_featurizer(model, projector, scope, proj_dim=8192, seed=1)
    g, _ = feat(model, *batch())
    assert g.shape == (B, feat.dim)
    flat = torch.cat([e.reshape(B, -1) for e in explicit(model, scope)], 1)
    want, got = flat @ flat.T, g @ g.T
    assert torch.linalg.norm(got - want) < 0.1 * torch.linalg.norm(want), f"{projector}/{scope}"
    if scope != "all":  # and not those of the other layers
        every = torch.cat([e.reshape(B, -1) for e in explicit(model, "all")], 1)
        assert torch.linalg.norm(got - every @ every.T) > 0.1 * torch.linalg.norm(want)


def test_unknown_projector_or_scope_is_refused():
    with pytest.raises(ValueError, match="unknown projector 'gauss'"):
        make_featurizer(tiny_net(), "gauss", "all", 64, 0)
    with pytest.raises(ValueError, match="unknown gradient scope 'last:0'"):
        make_featurizer(tiny_net(), "sparse", "last:0", 64, 0)


def test_featurizing_leaves_the_model_trainable():
    model = tiny_net()
    model[0].bias.requires_grad_(False)  # a user's frozen parameter stays frozen
    FactoredFeaturizer(model, "last:2", 64, 0)(model, *batch())
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True, True, True]
    assert all(p.grad is None for p in model.parameters())
