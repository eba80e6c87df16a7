"""Every listed architecture builds for 2 and 10 classes with its own final classifier replaced,
and trains a step on 2 tiny images (issue 24)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.config import ModelConfig, TrainConfig
from core.train.archs import torchvision_archs
from core.train.models import build_model
from core.train.training import train

# arch -> where torchvision keeps its final classifier (read from torchvision's source, not
# from the code under test); SqueezeNet's conv head becomes pool + flatten + linear at index 3.
HEADS = {"resnet18": "fc", "resnet34": "fc", "resnet50": "fc", "convnext_tiny": "classifier.2",
         "efficientnet_b0": "classifier.1", "vit_b_16": "heads.head", "mobilenet_v3_small": "classifier.3",
         "densenet121": "classifier", "swin_t": "head", "squeezenet1_1": "classifier.3",
         "regnet_y_400mf": "fc", "googlenet": "fc"}
SIZE = 32


def test_the_listed_architectures_are_torchvision_classifiers():
    assert set(HEADS) <= set(torchvision_archs())
    assert len(torchvision_archs()) >= 70  # every classification model, not a hand-picked few


@pytest.mark.parametrize("arch", sorted(HEADS))
def test_builds_for_2_and_10_classes_and_trains_a_step(arch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, SIZE, SIZE, 3), dtype=np.uint8)
    for classes in (2, 10):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch), classes, SIZE)
        head = model.get_submodule(HEADS[arch])
        assert isinstance(head, nn.Linear) and head.out_features == classes
        assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1] == HEADS[arch]
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 3, SIZE, SIZE))
        assert out.shape == (2, classes)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        steps = train(model, images, np.array([0, 1]), np.arange(2),
                      TrainConfig(steps=1, batch_size=2, augment="crop_flip"), torch.device("cpu"))
        assert steps == 1
        changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
        assert f"{HEADS[arch]}.weight" in changed and len(changed) > 2  # the head and the body learn
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unknown_arch_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"unknown model arch 'resnet19'.*d3m models.*resnet18"):
        build_model(ModelConfig("resnet19"), 2, SIZE)


def test_proxy_widths_need_the_small_cnn():
    with pytest.raises(ValueError, match="needs arch small_cnn"):
        build_model(ModelConfig("resnet18", width=2), 2, SIZE)
