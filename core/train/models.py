"""Model factory: a small CNN (default, fast on CPU) or any torchvision classifier
(core/train/archs.py), from random weights, ImageNet's or a file's (core/train/weights.py).

Inputs arrive normalised as core.data.images.to_tensor makes them ((x/255 - 0.5) / 0.25); a
model whose weights expect another normalisation (ImageNet's mean and std) is wrapped in
`Normalized`, which converts its input first, so every caller feeds every model the same way.
"""
from __future__ import annotations

import torch
from torch import nn

from core.config import ModelConfig, is_imagenet
from core.data.images import MEAN, STD
from core.train.archs import SMALL_CNN, build_torchvision, check_arch, head_name, replace_head
from core.train.weights import (IMAGENET_MEAN, IMAGENET_STD, imagenet_meta, imagenet_state, load_backbone,
                                read_weights_file)

NORMALIZE = ("auto", "imagenet", "default")


class SmallCNN(nn.Module):
    """conv-pool-conv-pool-flatten-MLP.

    Flattening (rather than global average pooling) keeps spatial layout, so the network can
    learn an object's shape and not only colour/texture (see shared/notes/d3m.md).
    """

    def __init__(self, num_classes: int, image_size: int = 32, width: int = 1):
        super().__init__()
        c1, c2, hidden = max(4, 16 // width), max(8, 32 // width), max(16, 128 // width)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Normalized(nn.Module):
    """`net` fed (x/255 - mean) / std per channel, from inputs normalised as to_tensor does."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        # x/255 = x_in * STD + MEAN, so (x/255 - mean) / std = x_in * scale + shift
        self.register_buffer("scale", STD / std_t, persistent=False)
        self.register_buffer("shift", (MEAN - mean_t) / std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale.to(x.dtype) + self.shift.to(x.dtype))


def input_normalization(cfg: ModelConfig) -> str:
    """imagenet | default: `auto` is imagenet for a torchvision arch started from weights (the
    normalisation all of torchvision's weights use), else the project's default."""
    if cfg.normalize not in NORMALIZE:
        raise ValueError(f"unknown model.normalize {cfg.normalize!r}: choose one of {', '.join(NORMALIZE)}")
    if cfg.normalize != "auto":
        return cfg.normalize
    return "imagenet" if cfg.weights and cfg.arch != SMALL_CNN else "default"


def build_model(cfg: ModelConfig, num_classes: int, image_size: int, load_weights: bool = True) -> nn.Module:
    """The configured architecture with a fresh `num_classes` head; `cfg.width` > 1 divides
    the small CNN's channel counts (proxy models). With `load_weights=False` the weights named
    by cfg.weights are not read (the architecture for a checkpoint's own state_dict)."""
    check_arch(cfg.arch)
    if cfg.arch == SMALL_CNN:
        model = SmallCNN(num_classes, image_size, cfg.width)
        if cfg.weights and load_weights:
            load_backbone(model, read_weights_file(cfg.weights), head_name(model), cfg.weights, cfg.arch)
    else:
        model = _torchvision(cfg, num_classes, image_size, load_weights)
    if input_normalization(cfg) == "imagenet":
        model = Normalized(model, IMAGENET_MEAN, IMAGENET_STD)
    return model


def _torchvision(cfg: ModelConfig, num_classes: int, image_size: int, load_weights: bool) -> nn.Module:
    if cfg.width != 1:
        raise ValueError(f"model width {cfg.width} (proxy models) needs arch small_cnn, not {cfg.arch!r}")
    imagenet = is_imagenet(cfg.weights)
    model = build_torchvision(cfg.arch, image_size, imagenet_meta(cfg.arch, cfg.weights) if imagenet else None)
    head = "classifier.1" if cfg.arch.startswith("squeezenet") else head_name(model)
    if cfg.weights and load_weights:
        state = imagenet_state(cfg.arch, cfg.weights) if imagenet else read_weights_file(cfg.weights)
        load_backbone(model, state, head, cfg.weights, cfg.arch)
    replace_head(model, num_classes)
    return model


def pick_device(requested: str = "auto") -> torch.device:
    """GPU when present, CPU always; 'cpu' or 'cuda' forces one."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(requested)
