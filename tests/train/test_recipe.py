"""The training recipe: seeded crop + flip augmentation, SGD with momentum or Adam, the
paper's named recipes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from core.config import ModelConfig, TrainConfig, analysis_config
from core.train.augment import Boxes, apply_boxes, sample_boxes, uses_augmentation
from core.train.models import build_model
from core.train.training import train

CPU = torch.device("cpu")


def images_and_labels(n: int = 24, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 2


def trained(arch: str, augment: str, seed: int = 0) -> dict[str, torch.Tensor]:
    images, labels = images_and_labels()
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch), 2, 16)
    train(model, images, labels, np.arange(24), TrainConfig(steps=4, batch_size=8, seed=seed, augment=augment), CPU)
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_augmentation_is_seeded_and_applied(arch):
    first, again = trained(arch, "crop_flip"), trained(arch, "crop_flip")
    assert same(first, again)  # one seed: identical weights, augmentation included
    assert not same(first, trained(arch, "none"))  # the crops and flips did change training
    assert not same(first, trained(arch, "crop_flip", seed=1))


def test_augmentation_defaults_off_for_the_small_cnn_only():
    assert not uses_augmentation("auto", build_model(ModelConfig(), 2, 16))
    assert uses_augmentation("auto", build_model(ModelConfig("resnet18"), 2, 16))
    assert not uses_augmentation("none", build_model(ModelConfig("resnet18"), 2, 16))
    with pytest.raises(ValueError, match="unknown train.augment 'flip'"):
        uses_augmentation("flip", build_model(ModelConfig(), 2, 16))


def boxes(cx, cy, w, h, flip) -> Boxes:
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Boxes(t(cx), t(cy), t(w), t(h), torch.tensor([flip]))


def test_a_full_box_is_the_image_or_its_mirror():
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(apply_boxes(x, boxes(0.5, 0.5, 1, 1, False)), x)
    torch.testing.assert_close(apply_boxes(x, boxes(0.5, 0.5, 1, 1, True)), torch.flip(x, dims=[3]))


def test_a_crop_is_that_region_enlarged_bilinearly():
    """As cropping then resizing, except the outermost output pixels at a box edge inside the
    image, which blend in the pixel beyond the box (torchvision's crop clamps to the box)."""
    x = torch.randn(1, 3, 8, 8)
    left_half = apply_boxes(x, boxes(0.25, 0.5, 0.5, 1, False))
    expected = F.interpolate(x[..., :4], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(left_half[..., :7], expected[..., :7])
    bottom_right = apply_boxes(x, boxes(0.75, 0.75, 0.5, 0.5, False))
    expected = F.interpolate(x[..., 4:, 4:], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(bottom_right[..., 1:, 1:], expected[..., 1:, 1:])


def test_boxes_cover_70_to_100_percent_and_stay_inside():
    b = sample_boxes(4000, torch.Generator().manual_seed(0))
    area = b.w * b.h
    clamped = (b.w == 1) | (b.h == 1)
    assert ((area >= 0.7 - 1e-6) & (area <= 1 + 1e-6))[~clamped].all()
    assert (b.cx - b.w / 2 >= -1e-6).all() and (b.cx + b.w / 2 <= 1 + 1e-6).all()
    assert (b.cy - b.h / 2 >= -1e-6).all() and (b.cy + b.h / 2 <= 1 + 1e-6).all()
    assert 0.45 < b.flip.float().mean() < 0.55
    assert ((b.w / b.h) >= 0.75 - 1e-5).logical_or(clamped).all()


def test_sgd_takes_a_momentum_step():
    """First step: v = g + wd p, p <- p - lr v (torch.optim.SGD, computed here by hand)."""
    images, labels = images_and_labels(n=8)
    cfg = TrainConfig(steps=1, batch_size=8, lr=0.1, weight_decay=0.01, optimizer="sgd", momentum=0.9)
    torch.manual_seed(0)
    model = build_model(ModelConfig(), 2, 16)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    loss = F.cross_entropy(model(x), torch.as_tensor(labels))
    grads = dict(zip(start, torch.autograd.grad(loss, list(model.parameters()))))
    train(model, images, labels, np.arange(8), cfg, CPU)
    for name, p in model.named_parameters():
        expected = start[name] - 0.1 * (grads[name] + 0.01 * start[name])
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown train.optimizer 'rmsprop'"):
        train(model, images, labels, np.arange(8), TrainConfig(steps=1, optimizer="rmsprop"), CPU)


def test_the_papers_recipes_and_explicit_settings_win():
    wb = analysis_config(arch="resnet50", weights="imagenet", recipe="paper-waterbirds").train
    # seeds/001 appendix B.2: Waterbirds ERM-based methods, Adam, lr 1e-4, wd 1e-4, batch 32, 20 epochs
    assert (wb.optimizer, wb.lr, wb.weight_decay, wb.batch_size, wb.epochs) == ("adam", 1e-4, 1e-4, 32, 20)
    assert wb.augment == "crop_flip"
    celeba = analysis_config(arch="resnet18", recipe="paper-celeba", epochs=10).train
    assert (celeba.lr, celeba.weight_decay, celeba.batch_size, celeba.epochs) == (1e-3, 1e-4, 512, 10)
    with pytest.raises(ValueError, match="unknown recipe 'imagenet'"):
        analysis_config(recipe="imagenet")
