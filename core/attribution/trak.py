"""TRAK facade: one model's scores of target examples against all train examples.

The stages are small and injected: a featurizer (gradients + projection), the feature store
(train features on disk), and the scorer (streamed Gram matrix, solve, chunked scores).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.attribution.gradients import make_featurizer
from core.attribution.scorer import gram, scores, solve_targets
from core.attribution.store import featurize, load_or_featurize
from core.config import TrakConfig, to_dict
from core.progress import Reporter, silent, scaled


def model_scores(model: nn.Module, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
                 target_idx: np.ndarray, cfg: TrakConfig, seed: int, device: torch.device,
                 folder: Path, out: np.ndarray, weight: float = 1.0, model_id: str = "",
                 report: Reporter = silent) -> np.ndarray:
    """Add weight · τ(z)_i for targets z (rows) and train examples i (columns) into `out`.

    Train features are stored in `folder` (reused when the config matches); the projection
    seed is shared by train and target gradients of this model, as TRAK requires.
    """
    featurizer = make_featurizer(model, cfg.projector, cfg.scope, cfg.proj_dim, seed, device)
    meta = {"trak": to_dict(cfg), "seed": seed, "model": model_id}
    train_feats, p_train = load_or_featurize(folder, meta, model, featurizer, images, train_idx, labels,
                                             cfg.batch_size, device, scaled(report, "train "))
    target_feats = np.zeros((len(target_idx), featurizer.dim), np.float32)
    featurize(model, featurizer, images, target_idx, labels, cfg.batch_size, device,
              scaled(report, "target "), out=target_feats)
    report("scoring", 0, 1)
    q = solve_targets(gram(train_feats, cfg.chunk_size), target_feats, cfg.ridge)
    scores(q, train_feats, p_train, cfg.chunk_size, out=out, weight=weight)
    report("scoring", 1, 1)
    return out
