"""Seeded training loop with a fixed optimizer-step budget, and batched prediction.

Methods customise training through three hooks instead of copies of the loop: `sample_probs`
(draw batches with replacement, e.g. group-balanced), `loss_fn` (e.g. weighted or GroupDRO
losses) and `on_epoch` (e.g. checkpoint selection by validation worst-group accuracy).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.config import AnalysisConfig, TrainConfig
from core.data.images import to_tensor
from core.train.augment import crop_flip, uses_augmentation
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
    """Train `model` in place on examples `idx`; return the number of optimizer steps.

    The recipe is cfg's: Adam or SGD with momentum, the step budget `steps_for(len(idx), cfg)`,
    seeded crop + flip augmentation (cfg.augment; core/train/augment.py) and, on a GPU,
    bfloat16 mixed precision (cfg.amp). Batches are read from `images` (a memory map) one ahead
    on a thread. `sample_probs` (aligned with idx) switches from shuffling to sampling with
    replacement. `loss_fn(logits, y, batch_ids)` replaces the mean cross-entropy.
    `on_epoch(epoch, model)` runs after every full pass. `lr_lambda(step)` multiplies the learning
    rate of each step (a schedule; torch's LambdaLR).
    """
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    augment = torch.Generator().manual_seed(cfg.seed) if uses_augmentation(cfg.augment, model) else None
    model.to(device).train()
    opt = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda is not None else None
    steps = steps_for(len(idx), cfg)
    per_epoch = math.ceil(len(idx) / cfg.batch_size)
    labels_t = torch.tensor(np.asarray(labels), dtype=torch.int64)
    batches = (np.sort(b) for _, b in _batches(np.asarray(idx), cfg, steps, rng, sample_probs))
    for step, (batch, x) in enumerate(read_ahead(images, batches, device)):  # sorted: fast memmap reads
        y = labels_t[batch].to(device)
        with autocast(device, cfg.amp):
            logits = model(crop_flip(x, augment) if augment is not None else x)
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
                on_epoch(done // per_epoch - 1, model)
                model.train()
    model.eval()
    return steps


OPTIMIZERS = ("adam", "sgd")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or SGD with cfg.momentum (seeds/001 appendix B.2 uses Adam throughout)."""
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown train.optimizer {cfg.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


def autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on a GPU when `amp` (no loss scaling needed); a no-op on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def read_ahead(images: np.ndarray, batches: Iterable[np.ndarray], device: torch.device
               ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(ids, input tensor) per batch; the next batch's rows are read while this one is used."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(np.ascontiguousarray, images[batch] if len(batch) else images[:0])
            if pending is not None:
                yield pending[0], to_tensor(pending[1].result(), device)
            pending = (batch, future)
        if pending is not None:
            yield pending[0], to_tensor(pending[1].result(), device)


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


def eval_batch_size(image_size: int, device: torch.device | str = "cpu") -> int:
    """Examples per inference batch: 512 at 32 px, fewer for larger images (activations grow
    with the pixels), four times more on a GPU."""
    per_pixel = 512 * 32 * 32 * (4 if torch.device(device).type == "cuda" else 1)
    return int(min(512, max(16, per_pixel // (image_size * image_size))))


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, idx: np.ndarray, device: torch.device,
                   batch_size: int | None = None) -> np.ndarray:
    """Logits (len(idx), C) in eval mode, in batches (by default sized for the image size)."""
    model.eval().to(device)
    idx = np.asarray(idx)
    size = batch_size or eval_batch_size(images.shape[1], device)
    batches = (idx[i:i + size] for i in range(0, len(idx), size))
    out = [model(x).float().cpu() for _, x in read_ahead(images, batches, device)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
