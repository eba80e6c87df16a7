"""Seeded training loop with a fixed optimizer-step budget, and batched prediction.

Methods customise training through three hooks instead of copies of the loop: `sample_probs`
(draw batches with replacement, e.g. group-balanced), `loss_fn` (e.g. weighted or GroupDRO
losses) and `on_epoch` (e.g. checkpoint selection by validation worst-group accuracy).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.config import AnalysisConfig, TrainConfig
from core.data.images import to_tensor
from core.train.models import build_model
from core.progress import Reporter, silent

if TYPE_CHECKING:
    from core.data.dataset import Dataset

LossFn = Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]
EpochHook = Callable[[int, nn.Module], None]



def steps_for(n_examples: int, cfg: TrainConfig) -> int:
    """The optimizer-step budget: cfg.steps when fixed, else epochs over n examples."""
    return cfg.steps or cfg.epochs * math.ceil(n_examples / cfg.batch_size)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _batches(idx: np.ndarray, cfg: TrainConfig, steps: int, rng: np.random.Generator,
             sample_probs: np.ndarray | None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (epoch, batch indices) until `steps` batches were drawn."""
    per_epoch = math.ceil(len(idx) / cfg.batch_size)
    for step in range(steps):
        epoch, pos = divmod(step, per_epoch)
        if pos == 0:
            order = (rng.choice(idx, size=len(idx), replace=True, p=sample_probs)
                     if sample_probs is not None else rng.permutation(idx))
        yield epoch, order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
          cfg: TrainConfig, device: torch.device, *, sample_probs: np.ndarray | None = None,
          loss_fn: LossFn | None = None, on_epoch: EpochHook | None = None,
          report: Reporter = silent, lr_lambda: Callable[[int], float] | None = None) -> int:
    """Train `model` in place with Adam on examples `idx`; return the number of optimizer steps.

    The step budget is `steps_for(len(idx), cfg)`. `sample_probs` (aligned with idx) switches
    from shuffling to sampling with replacement. `loss_fn(logits, y, batch_ids)` replaces the
    mean cross-entropy. `on_epoch(epoch, model)` runs after every full pass. `lr_lambda(step)`
    multiplies the learning rate of each step (a schedule; torch's LambdaLR).
    """
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda is not None else None
    steps = steps_for(len(idx), cfg)
    per_epoch = math.ceil(len(idx) / cfg.batch_size)
    labels_t = torch.tensor(np.asarray(labels), dtype=torch.int64)
    for step, (epoch, batch) in enumerate(_batches(np.asarray(idx), cfg, steps, rng, sample_probs)):
        batch = np.sort(batch)  # sorted reads are much faster on memory-mapped images
        x, y = to_tensor(images[batch], device), labels_t[batch].to(device)
        logits = model(x)
        loss = loss_fn(logits, y, batch) if loss_fn else F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        done = step + 1
        if done % per_epoch == 0 or done == steps:
            report("training", done, steps)
            if on_epoch is not None and done % per_epoch == 0:
                model.eval()
                on_epoch(epoch, model)
                model.train()
    model.eval()
    return steps


@dataclass
class Trained:
    model: nn.Module
    steps: int
    seconds: float


def fit(data: "Dataset", idx: np.ndarray, cfg: AnalysisConfig, train_cfg: TrainConfig,
        device: torch.device, report: Reporter, **hooks) -> Trained:
    """A fresh model of the configured architecture trained on examples idx (hooks: `train`'s)."""
    torch.manual_seed(train_cfg.seed)
    model = build_model(cfg.model, data.n_classes, cfg.data.image_size)
    start = time.perf_counter()
    steps = train(model, data.images, data.labels, idx, train_cfg, device, report=report, **hooks)
    return Trained(model, steps, time.perf_counter() - start)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, idx: np.ndarray, device: torch.device,
                   batch_size: int = 512) -> np.ndarray:
    """Logits (len(idx), C) in eval mode."""
    model.eval().to(device)
    out = [model(to_tensor(images[idx[i:i + batch_size]], device)).float().cpu()
           for i in range(0, len(idx), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
