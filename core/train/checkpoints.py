"""Model checkpoints that carry the config that made them."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.config import AnalysisConfig, from_dict, to_dict
from core.train.models import build_model


def save_checkpoint(path: Path, model: nn.Module, cfg: AnalysisConfig, num_classes: int | None = None) -> None:
    """state_dict + the analysis config (+ class count) in one file, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "config": to_dict(cfg),
                "num_classes": num_classes or head.out_features}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model from a checkpoint written by save_checkpoint (eval mode)."""
    blob = torch.load(path, map_location=device, weights_only=True)
    cfg = from_dict(AnalysisConfig, blob["config"])
    model = build_model(cfg.model, blob["num_classes"], cfg.data.image_size, load_weights=False)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
