"""TRAK scores S (validation x train) as the selections use them, whatever their storage.

Everything the analysis, D3M, Auto-D3M, LDS and the pages need from S is one of a few
products, so the matrix itself never has to exist (issue 20):
- `group_means(groups, n)`: τ(G)_i, the mean row of each group (equation 3);
- `rows(idx)`: a few rows (one validation example's influence on every training example);
- `subset_sums(masks)`: Σ_{i∈S} τ(z)_i per subset and target (LDS);
- `class_projection(rows)` / `class_component(rows)`: the top principal component of the
  centred rows of one class (Auto-D3M) and the rows' coordinates on it.

`FactoredScores` (factored.py) computes them from the ensemble's factors; `DenseScores` from a
stored matrix (analyses made before the factors, tests, small exports). A dense matrix is
made only on request (`to_dense`, `export`), and refused in one line naming its size when it
would not fit in the memory (or disk) available.
"""
from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from scipy.linalg import eigh
from sklearn.decomposition import PCA


class DenseTooLarge(MemoryError):
    """A dense score matrix was asked for that would not fit; the message names the bytes."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation (psutil, else /proc/meminfo's MemAvailable)."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("cannot tell the available memory (no psutil, no /proc/meminfo)")


def size(n_bytes: float) -> str:
    """12.9 GB, 480 MB, 0.096 MB."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.3g} MB"


def check_dense_fits(shape: tuple[int, int], where: str = "memory", folder: Path | None = None) -> int:
    """The bytes of a float32 matrix of `shape`; DenseTooLarge when they exceed the memory
    available (where="memory") or the free space of `folder` (where="disk")."""
    need = int(shape[0]) * int(shape[1]) * 4
    have = available_memory() if where == "memory" else shutil.disk_usage(folder).free
    if need > have:
        raise DenseTooLarge(f"a dense {shape[0]} x {shape[1]} float32 score matrix needs {size(need)}, more than "
                            f"the {size(have)} of {where} available{f' in {folder}' if folder else ''}")
    return need


def top_direction(gram_matrix: np.ndarray) -> np.ndarray:
    """The unit eigenvector of the largest eigenvalue of a symmetric PSD matrix."""
    r = len(gram_matrix)
    return eigh(gram_matrix, subset_by_index=[r - 1, r - 1], check_finite=False)[1][:, 0]


class Scores(ABC):
    """The products of S that the selections use; `shape` is (validation, train)."""

    shape: tuple[int, int]

    @abstractmethod
    def rows(self, idx: np.ndarray) -> np.ndarray:
        """S[idx] as float64 (len(idx) x train)."""

    def row(self, i: int) -> np.ndarray:
        return self.rows(np.array([i]))[0]

    @abstractmethod
    def group_means(self, groups: np.ndarray, n_groups: int) -> np.ndarray:
        """τ(G)_i = mean of S[z, i] over validation rows z of group G: (n_groups x train)
        float64, NaN rows for groups without a validation example."""

    @abstractmethod
    def subset_sums(self, masks: np.ndarray) -> np.ndarray:
        """masks (subsets x train, 0/1) @ Sᵀ: each subset's summed scores per target, float64."""

    @abstractmethod
    def class_projection(self, rows: np.ndarray) -> np.ndarray:
        """Coordinates of the centred S[rows] on their top principal component (sign arbitrary)."""

    @abstractmethod
    def class_component(self, rows: np.ndarray) -> np.ndarray:
        """That component: a unit vector over the train examples (sign arbitrary)."""

    @abstractmethod
    def to_dense(self) -> np.ndarray:
        """S as a float32 array in memory (refused with DenseTooLarge when it would not fit)."""

    @abstractmethod
    def export(self, path: Path) -> Path:
        """S as a float32 .npy file (refused with DenseTooLarge when the disk lacks the space)."""


class DenseScores(Scores):
    """S held as an array (a memmap of an old analysis's scores.npy, or a test's matrix)."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = matrix
        self.shape = tuple(matrix.shape)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[np.asarray(idx)], np.float64)

    def group_means(self, groups: np.ndarray, n_groups: int) -> np.ndarray:
        out = np.full((n_groups, self.shape[1]), np.nan, np.float64)
        for g in range(n_groups):
            rows = np.flatnonzero(groups == g)
            if len(rows):
                out[g] = self.rows(rows).mean(axis=0)
        return out

    def subset_sums(self, masks: np.ndarray) -> np.ndarray:
        return np.asarray(masks, np.float64) @ np.asarray(self.matrix, np.float64).T

    def _pca(self, rows: np.ndarray) -> PCA:
        return PCA(n_components=1, svd_solver="full").fit(self.rows(rows))

    def class_projection(self, rows: np.ndarray) -> np.ndarray:
        return self._pca(rows).transform(self.rows(rows))[:, 0]

    def class_component(self, rows: np.ndarray) -> np.ndarray:
        return self._pca(rows).components_[0]

    def to_dense(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float32)

    def export(self, path: Path) -> Path:
        check_dense_fits(self.shape, "disk", Path(path).parent)
        np.save(path, np.asarray(self.matrix, np.float32))
        return Path(path)


def as_scores(scores: Scores | np.ndarray) -> Scores:
    """A Scores for either form: arrays (tests, old callers) are wrapped as DenseScores."""
    return scores if isinstance(scores, Scores) else DenseScores(scores)
