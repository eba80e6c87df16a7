"""TRAK scores τ(z)_i = g(z)ᵀ (ΦᵀΦ + λI)⁻¹ g_i (1 - p_i) (seeds/001 section 4), streamed.

ΦᵀΦ is accumulated in float64 over chunks of train features (during featurization or from
an array); the ridge system is factored once (Cholesky) and each chunk of targets is solved
and scored against the train features chunk by chunk, so peak memory is k x k plus one chunk
of each side, never n x n nor m x k.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
from scipy.linalg import cho_factor, cho_solve

Chunks = Iterable[tuple[int, np.ndarray]]  # (first row, rows) pairs covering a feature matrix


def array_chunks(features: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(features), chunk):
        yield start, np.asarray(features[start:start + chunk])


ACCUMULATE_ROWS = 512  # rows converted to float64 at a time: a 4,096-row chunk would copy 8x more


def accumulate(gram_matrix: np.ndarray, block: np.ndarray) -> None:
    """gram_matrix += blockᵀ block, in float64 (converted a few rows at a time)."""
    for start in range(0, len(block), ACCUMULATE_ROWS):
        rows = np.asarray(block[start:start + ACCUMULATE_ROWS], dtype=np.float64)
        gram_matrix += rows.T @ rows


def gram(features: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """ΦᵀΦ in float64, accumulated over row chunks."""
    out = np.zeros((features.shape[1],) * 2, np.float64)
    for _, block in array_chunks(features, chunk):
        accumulate(out, block)
    return out


def factor(gram_matrix: np.ndarray, ridge: float) -> tuple:
    """Cholesky factor of ΦᵀΦ + λI with λ = ridge · trace(ΦᵀΦ)/k (a relative ridge)."""
    if not np.isfinite(gram_matrix).all():
        raise ValueError("ΦᵀΦ has non-finite entries: the gradients overflowed (is the model diverged?)")
    k = gram_matrix.shape[0]
    lam = ridge * np.trace(gram_matrix) / k
    # checked above: scipy's own finiteness check costs 20x the factorisation here
    return cho_factor(gram_matrix + lam * np.eye(k), lower=True, check_finite=False)


def solve(chol: tuple, targets: np.ndarray) -> np.ndarray:
    """Q = G (ΦᵀΦ + λI)⁻¹ for target features G (m x k): solved, never inverted."""
    return cho_solve(chol, np.asarray(targets, np.float64).T, check_finite=False).T


def solve_targets(gram_matrix: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    return solve(factor(gram_matrix, ridge), targets)


def score_chunks(q: np.ndarray, train_chunks: Chunks, p_train: np.ndarray, out: np.ndarray,
                 weight: float = 1.0) -> np.ndarray:
    """out[:, i] += weight · Q g_i (1 - p_i) over train chunks; out is (targets x train)."""
    q32 = q.astype(np.float32)
    for start, block in train_chunks:
        stop = start + len(block)
        s = (q32 @ np.asarray(block, np.float32).T) * (1.0 - np.asarray(p_train[start:stop], np.float32))
        out[:, start:stop] += weight * s
    return out


def scores(q: np.ndarray, features: np.ndarray, p_train: np.ndarray, chunk: int = 4096,
           out: np.ndarray | None = None, weight: float = 1.0) -> np.ndarray:
    """In-memory form of score_chunks; returns out (m x n float32, new when not given)."""
    if out is None:
        out = np.zeros((q.shape[0], len(features)), np.float32)
    return score_chunks(q, array_chunks(features, chunk), p_train, out, weight)
