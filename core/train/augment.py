"""Training augmentation: random resized crop + horizontal flip, batched on the model's device
and seeded (two trainings with one seed see the same crops).

As torchvision's RandomResizedCrop(scale, ratio) + RandomHorizontalFlip, on the cached
(already resized and centre-cropped) images: each example gets a crop box of a uniform
fraction `scale` of the image's area and a log-uniform aspect ratio, uniformly placed, resized
back to the full size (bilinear) and flipped with probability 1/2. Deliberate differences: a
box too wide or tall for the image is clamped to it rather than drawn again (torchvision tries
10 times, then falls back to a centre crop), and all examples are resampled by one
`grid_sample` (no antialiasing: crops of >= 70% area are enlarged, not shrunk; the outermost
output pixels at a box edge inside the image blend in the pixel beyond it, where torchvision's
crop repeats the edge). The default
scale (0.7, 1) is the Waterbirds training transform of Sagawa et al. (GroupDRO) and DFR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

AUGMENTS = ("auto", "crop_flip", "none")
SCALE, RATIO = (0.7, 1.0), (3 / 4, 4 / 3)


@dataclass
class Boxes:
    """Per example: crop centre (cx, cy) and size (w, h) as fractions of the image, and flip."""

    cx: torch.Tensor
    cy: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor
    flip: torch.Tensor


def sample_boxes(n: int, generator: torch.Generator, scale: tuple[float, float] = SCALE,
                 ratio: tuple[float, float] = RATIO) -> Boxes:
    area = torch.empty(n).uniform_(*scale, generator=generator)
    aspect = torch.exp(torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator))
    w, h = torch.sqrt(area * aspect).clamp(max=1.0), torch.sqrt(area / aspect).clamp(max=1.0)
    cx = w / 2 + torch.rand(n, generator=generator) * (1 - w)
    cy = h / 2 + torch.rand(n, generator=generator) * (1 - h)
    return Boxes(cx, cy, w, h, torch.rand(n, generator=generator) < 0.5)


def apply_boxes(x: torch.Tensor, boxes: Boxes) -> torch.Tensor:
    """Each image (N, C, H, W) cropped to its box, resized back to H x W and maybe flipped."""
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = torch.where(boxes.flip, -boxes.w, boxes.w)
    theta[:, 0, 2] = 2 * boxes.cx - 1
    theta[:, 1, 1] = boxes.h
    theta[:, 1, 2] = 2 * boxes.cy - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return apply_boxes(x, sample_boxes(len(x), generator))


def uses_augmentation(augment: str, model: nn.Module) -> bool:
    """crop_flip: yes; none: no; auto: yes unless the model is (or wraps) the small CNN."""
    from core.train.models import SmallCNN

    if augment not in AUGMENTS:
        raise ValueError(f"unknown train.augment {augment!r}: choose one of {', '.join(AUGMENTS)}")
    if augment == "auto":
        return not any(isinstance(m, SmallCNN) for m in model.modules())
    return augment == "crop_flip"
