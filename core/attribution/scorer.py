"""TRAK scores τ(z)_i = g(z)ᵀ (ΦᵀΦ + λI)⁻¹ g_i (1 - p_i) (seeds/001 section 4), streamed.

ΦᵀΦ is accumulated in float64 over chunks of the (memory-mapped) train features and the
targets' side is solved once, so peak memory is k x k plus one chunk, never n x n.
"""
from __future__ import annotations

import numpy as np


def gram(features: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """ΦᵀΦ in float64, accumulated over row chunks."""
    k = features.shape[1]
    out = np.zeros((k, k), np.float64)
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start:start + chunk], dtype=np.float64)
        out += block.T @ block
    return out


def solve_targets(gram_matrix: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    """Q = G (ΦᵀΦ + λI)⁻¹ with λ = ridge · trace(ΦᵀΦ)/k; solved (Cholesky), never inverted."""
    k = gram_matrix.shape[0]
    lam = ridge * np.trace(gram_matrix) / k
    a = gram_matrix + lam * np.eye(k)
    chol = np.linalg.cholesky(a)
    z = np.linalg.solve(chol, np.asarray(targets, np.float64).T)
    return np.linalg.solve(chol.T, z).T


def scores(q: np.ndarray, features: np.ndarray, p_train: np.ndarray, chunk: int = 4096,
           out: np.ndarray | None = None, weight: float = 1.0) -> np.ndarray:
    """out[:, i] += weight · Q g_i (1 - p_i), for train chunks; returns out (m x n float32)."""
    if out is None:
        out = np.zeros((q.shape[0], len(features)), np.float32)
    q32 = q.astype(np.float32)
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start:start + chunk], dtype=np.float32)
        s = (q32 @ block.T) * (1.0 - np.asarray(p_train[start:start + chunk], np.float32))
        out[:, start:start + chunk] += weight * s
    return out
