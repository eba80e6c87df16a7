"""TRAK facade: one model's scores of target examples against all train examples.

The stages are small and injected: a featurizer (gradients + projection), the feature store
(train features streamed to disk with ΦᵀΦ accumulated on the fly), and the scorer (one
Cholesky factor, then targets in chunks scored against train chunks). Peak memory is set by
TrakConfig.chunk_size (plus k x k), not by the number of train or target examples.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from core.attribution.gradients import is_small_cnn, make_featurizer, resolve_scope
from core.attribution.scorer import factor, score_chunks, solve
from core.attribution.store import TrainFeatures, featurize, load_or_featurize
from core.config import ModelConfig, TrakConfig
from core.progress import Reporter, silent, scaled

FEATURE_FIELDS = ("projector", "proj_dim", "scope", "proxy_width")  # what changes stored features


def feature_meta(cfg: TrakConfig, seed: int, model_id: str) -> dict:
    """What the train features depend on: other settings (T, ridge, chunking) may change freely."""
    return {**{f: getattr(cfg, f) for f in FEATURE_FIELDS}, "seed": seed, "model": model_id}


def proxy_model_config(model: ModelConfig, proxy_width: int) -> ModelConfig:
    """The narrower model the ensemble members use: channel widths divided by proxy_width."""
    if proxy_width < 1:
        raise ValueError(f"trak.proxy_width must be >= 1, got {proxy_width}")
    if proxy_width > 1 and model.arch != "small_cnn":
        raise ValueError(f"trak.proxy_width={proxy_width} needs arch small_cnn, not {model.arch!r}")
    return replace(model, width=model.width * proxy_width)


def model_scores(model: nn.Module, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
                 target_idx: np.ndarray, cfg: TrakConfig, seed: int, device: torch.device,
                 folder: Path, out: np.ndarray, weight: float = 1.0, model_id: str = "",
                 report: Reporter = silent) -> np.ndarray:
    """Add weight · τ(z)_i for targets z (rows) and train examples i (columns) into `out`.

    The dense form (targets x train), for small problems and references; the analysis keeps
    τ factored instead (`model_factors`). Train features are stored in `folder` (reused when
    the config matches); the projection seed is shared by train and target gradients of this
    model, as TRAK requires.
    """
    train = None
    for train, start, q in _solved_targets(model, images, labels, train_idx, target_idx, cfg, seed, device,
                                           folder, model_id, report):
        score_chunks(q, train.chunks(cfg.chunk_size), train.p, out[start:start + len(q)], weight)
    return out


def model_factors(model: nn.Module, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
                  target_idx: np.ndarray, cfg: TrakConfig, seed: int, device: torch.device, folder: Path,
                  q_out: np.ndarray | None = None, model_id: str = "", report: Reporter = silent
                  ) -> tuple[TrainFeatures, np.ndarray]:
    """One model's τ as factors, τ(z)_i = Q[z] · (1 - p_i) Φ_i (core/attribution/factored.py):
    the train feature store in `folder` (Φ, p, ΦᵀΦ) and Q = G (ΦᵀΦ + λI)⁻¹ of the targets,
    written into `q_out` (targets x k, e.g. a memmap; a new float32 array when None)."""
    train = None
    for train, start, q in _solved_targets(model, images, labels, train_idx, target_idx, cfg, seed, device,
                                           folder, model_id, report):
        if q_out is None:
            q_out = np.zeros((len(target_idx), q.shape[1]), np.float32)
        q_out[start:start + len(q)] = q
    return train, q_out


def _solved_targets(model: nn.Module, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
                    target_idx: np.ndarray, cfg: TrakConfig, seed: int, device: torch.device, folder: Path,
                    model_id: str, report: Reporter) -> Iterator[tuple[TrainFeatures, int, np.ndarray]]:
    """The train store, then (store, first target, Q of a chunk of targets) chunk by chunk."""
    for name in ("proj_dim", "batch_size", "chunk_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"trak.{name} must be >= 1, got {getattr(cfg, name)}")
    cfg = replace(cfg, scope=resolve_scope(cfg.scope, len(train_idx), is_small_cnn(model)))  # "auto": by n, model
    featurizer = make_featurizer(model, cfg.projector, cfg.scope, cfg.proj_dim, seed, device)
    train = load_or_featurize(folder, feature_meta(cfg, seed, model_id), model, featurizer, images,
                              train_idx, labels, cfg.batch_size, cfg.chunk_size, device,
                              scaled(report, "train "))
    chol = factor(train.gram, cfg.ridge)
    report("scoring", 0, len(target_idx))  # the stage shows while the first chunk is featurized
    for start in range(0, len(target_idx), cfg.chunk_size):
        chunk = target_idx[start:start + cfg.chunk_size]
        target_feats = np.zeros((len(chunk), featurizer.dim), np.float32)
        featurize(model, featurizer, images, chunk, labels, cfg.batch_size, device, out=target_feats)
        yield train, start, solve(chol, target_feats)
        report("scoring", start + len(chunk), len(target_idx))
