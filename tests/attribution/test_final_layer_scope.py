"""On torchvision models the default gradient scope (final layer) is the gradient of the margin
w.r.t. the head, computed from the penultimate features by one forward pass per example: no
backward pass runs through the backbone (issue 24)."""
from __future__ import annotations

import pytest
import torch

from core.attribution.gradients import FactoredFeaturizer, margin
from core.config import ModelConfig
from core.train.models import build_model

HEADS = {"resnet18": "fc", "mobilenet_v3_small": "classifier.3", "vit_b_16": "heads.head"}


@pytest.mark.parametrize("arch", sorted(HEADS))
@pytest.mark.parametrize("classes", [2, 5])
def test_final_layer_features_come_from_one_forward_pass(tmp_path, arch, classes):
    torch.manual_seed(0)
    source = build_model(ModelConfig(arch), 1000, 32)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model(ModelConfig(arch, weights=str(tmp_path / "w.pt")), classes, 32).eval()
    head = model.get_submodule(f"net.{HEADS[arch]}")
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4) % classes

    penultimate = []
    head.register_forward_hook(lambda m, inp, out: penultimate.append(inp[0].detach()))
    forwards, backwards = [], []
    body = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))  # the first layer
    body.register_forward_hook(lambda *a: forwards.append(1))
    body.register_full_backward_hook(lambda *a: backwards.append(1))

    feats, p = FactoredFeaturizer(model, "last", proj_dim=10**6, seed=0)(model, x, y)
    assert len(forwards) == 1 and backwards == []  # one forward; the backward stops at the head

    # independently: margin gradient w.r.t. the logits, times the penultimate features (+ bias 1)
    a = penultimate[0].reshape(4, -1)
    z = (a @ head.weight.T + head.bias).requires_grad_(True)
    (delta,) = torch.autograd.grad(margin(z, y).sum(), z)
    expected = torch.einsum("bo,bi->boi", delta, torch.cat([a, torch.ones(4, 1)], 1)).reshape(4, -1)
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(p, torch.softmax(z.detach(), 1)[torch.arange(4), y], rtol=1e-5, atol=1e-6)


def test_auto_scope_stays_on_the_final_layer_for_torchvision_models(tmp_path, monkeypatch):
    """The wider scope of "auto" was measured on the small CNN only; a torchvision model
    keeps the final layer at any n (wider scopes of a ResNet-50 at 224 px cost several epochs)."""
    import numpy as np

    from core.attribution import gradients, trak
    from core.config import TrakConfig

    monkeypatch.setattr(gradients, "AUTO_WIDE_FROM", 4)  # 8 train examples count as "large"
    scopes = []
    real = trak.make_featurizer
    monkeypatch.setattr(trak, "make_featurizer", lambda model, proj, scope, *a: scopes.append(scope) or real(
        model, proj, scope, *a))
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10) % 2
    for arch in ("resnet18", "small_cnn"):
        model = build_model(ModelConfig(arch), 2, 32).eval()
        trak.model_factors(model, images, labels, np.arange(8), np.arange(8, 10), TrakConfig(proj_dim=16), 0,
                           torch.device("cpu"), tmp_path / arch)
    assert scopes == ["last", "last:3"]
    assert gradients.resolve_scope("auto", 160_000, small_cnn=False) == "last"
