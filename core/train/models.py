"""Model factory: a small CNN (default, fast on CPU) and torchvision's ResNet-18.

Weights come only from a local file the user names; nothing is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.config import ModelConfig


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


def build_model(cfg: ModelConfig, num_classes: int, image_size: int) -> nn.Module:
    """Build the configured architecture; `cfg.width` > 1 divides channel counts (proxy models)."""
    if cfg.arch == "small_cnn":
        model = SmallCNN(num_classes, image_size, cfg.width)
    elif cfg.arch == "resnet18":
        model = _resnet18(num_classes, cfg)
    else:
        raise ValueError(f"unknown model arch {cfg.arch!r}: choose small_cnn or resnet18")
    return model


def _resnet18(num_classes: int, cfg: ModelConfig) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    if cfg.weights:
        path = Path(cfg.weights)
        if not path.is_file():
            raise FileNotFoundError(f"model weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, _ = model.load_state_dict(state, strict=False)
        if [m for m in missing if not m.startswith("fc.")]:
            raise ValueError(f"{path}: not a ResNet-18 state_dict (missing {missing[:3]}...)")
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def pick_device(requested: str = "auto") -> torch.device:
    """GPU when present, CPU always; 'cpu' or 'cuda' forces one."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available")
    return torch.device(requested)
