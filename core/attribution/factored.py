"""TRAK scores kept factored (issue 20): S = Σ_t w_t Q_t B_tᵀ, never the val x train matrix.

For ensemble member t (weight w_t = 1/T), as core/attribution/scorer.py computes τ:
  Q_t = G_val (Φ_tᵀΦ_t + λ_t I)⁻¹   (val x k_t: ensemble/factors/q_<t>.npy, float32)
  B_t = diag(1 - p_t) Φ_t           (train x k_t: the member's feature store, Φ_t and p_t)
so τ_t(z)_i = Q_t[z] · B_t[i]. With Q = [w_1 Q_1 … w_T Q_T] (val x Tk) and B = [B_1 … B_T]
(train x Tk), S = Q Bᵀ has rank ≤ Tk, and
- any weighted sum of rows (group means, equation 3; one row) is (WQ) Bᵀ: O(r Tk n), one
  streamed pass over the train features;
- subset sums over train (LDS) are (M B) Qᵀ;
- the top principal component of a class's rows R: with W = Q_R − mean(Q_R) the centred rows
  are X = W Bᵀ and, writing H = BᵀB = L Lᵀ, X Xᵀ = (W L)(W L)ᵀ. So the rows' coordinates on
  the component are Y v₁ with Y = W L and v₁ the top right singular vector of Y, and the
  component itself is B L⁺ᵀ v₁ (unit norm, as BᵀB = L Lᵀ). Exact, not an approximation, from
  H (Tk x Tk, accumulated once by the analysis: ensemble/factors/gram_b.npy). L is H's
  Cholesky factor, or V √Λ from its eigendecomposition (eigenvalues below 1e-12 of the
  largest dropped) when H is singular, as it is for scope "last" (a margin gradient's output
  rows sum to zero). When Tk exceeds DENSE_RANK (all-layer features) and a class's rows are
  small (DIRECT_BYTES), they are formed and decomposed directly instead: H's root would cost
  O((Tk)³) where the rows cost O(m_c Tk n).
"""
from __future__ import annotations

from contextlib import ExitStack, closing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy.linalg import LinAlgError, cholesky, eigh, solve_triangular
from scipy.sparse.linalg import LinearOperator, eigsh

from core.attribution.scores import Scores, check_dense_fits, top_direction
from core.attribution.store import TrainFeatures

CHUNK = 4096  # train rows per streamed chunk of B
RCOND = 1e-12  # eigenvalues of H below RCOND · the largest are treated as zero
DENSE_RANK = 2048  # up to this rank of H a class's r x r Gram is formed; beyond, Lanczos
DIRECT_BYTES = 2**28  # beyond DENSE_RANK, a class's rows up to this size (float64) are formed instead


def residual_rows(phi: np.ndarray, p: np.ndarray) -> np.ndarray:
    """B rows: (1 - p_i) Φ_i, in float64."""
    return np.asarray(phi, np.float64) * (1.0 - np.asarray(p, np.float64))[:, None]


def group_rows_mean(q: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of Q's rows over each group's validation examples (zeros for an empty group)."""
    out = np.zeros((n_groups, q.shape[1]), np.float64)
    for g in range(n_groups):
        rows = np.flatnonzero(groups == g)
        if len(rows):
            out[g] = np.asarray(q[rows], np.float64).mean(axis=0)
    return out


def centred(block: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Rows minus the class's mean row (PCA centres before finding the component)."""
    return block - mean


@dataclass
class Member:
    """One ensemble member's factors: S_t = Q_t B_tᵀ, weighted `weight` (1/T) in the average."""

    q: np.ndarray  # (val, k) memmap
    train: TrainFeatures  # Φ (on disk) and p
    weight: float


class FactoredScores(Scores):
    """S from the ensemble's factors; see the module docstring for the algebra."""

    def __init__(self, members: Sequence[Member], gram_b: np.ndarray | None = None, chunk: int = CHUNK,
                 dense_rank: int = DENSE_RANK, direct_bytes: int = DIRECT_BYTES):
        self.members = list(members)
        self.dense_rank, self.direct_bytes = dense_rank, direct_bytes
        self.shape = (int(self.members[0].q.shape[0]), int(self.members[0].train.n))
        self.chunk = chunk
        self._gram_b = gram_b
        self.offsets = np.cumsum([0] + [m.q.shape[1] for m in self.members])

    def b_chunks(self, chunk: int | None = None) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(first train row, [B_t rows for each t]) over the train rows, every store read in step."""
        chunk = chunk or self.chunk
        with ExitStack() as stack:
            streams = [stack.enter_context(closing(m.train.chunks(chunk))) for m in self.members]
            for parts in zip(*streams):
                start = parts[0][0]
                yield start, [residual_rows(phi, m.train.p[start:start + len(phi)])
                              for m, (_, phi) in zip(self.members, parts)]

    def times_b(self, lefts: Sequence[np.ndarray], out: np.ndarray | None = None,
                chunk: int | None = None) -> np.ndarray:
        """Σ_t lefts_t B_tᵀ (r x train) for lefts_t (r x k_t), in float64; into `out` when
        given (stored in its dtype)."""
        if out is None:
            out = np.zeros((len(lefts[0]), self.shape[1]), np.float64)
        lefts = [np.asarray(a, np.float64) for a in lefts]
        for start, blocks in self.b_chunks(chunk):
            out[:, start:start + len(blocks[0])] = sum(a @ b.T for a, b in zip(lefts, blocks))
        return out

    def rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        return self.times_b([m.weight * np.asarray(m.q[idx], np.float64) for m in self.members])

    def group_means(self, groups: np.ndarray, n_groups: int) -> np.ndarray:
        out = self.times_b([m.weight * group_rows_mean(m.q, groups, n_groups) for m in self.members])
        out[np.bincount(groups, minlength=n_groups)[:n_groups] == 0] = np.nan
        return out

    def subset_sums(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, np.float64)
        mb = [np.zeros((len(masks), m.q.shape[1])) for m in self.members]
        for start, blocks in self.b_chunks():
            for acc, b in zip(mb, blocks):
                acc += masks[:, start:start + len(b)] @ b
        return sum(m.weight * (acc @ np.asarray(m.q, np.float64).T) for m, acc in zip(self.members, mb))

    @property
    def gram_b(self) -> np.ndarray:
        """H = BᵀB (Tk x Tk, float64): stored by the analysis, else accumulated now."""
        if self._gram_b is None:
            self._gram_b = accumulate_gram_b(self)
        return self._gram_b

    @cached_property
    def _root(self) -> tuple[np.ndarray, bool]:
        """(L, whether L is triangular) with H = L Lᵀ: Cholesky, or V √Λ over the eigenvalues
        kept when H is singular (or nearly: a Cholesky pivot below √RCOND of the largest)."""
        h = self.gram_b
        try:
            low = cholesky(h, lower=True, check_finite=False)
            d = np.diag(low)
            if d.min() > np.sqrt(RCOND) * d.max():
                return low, True
        except LinAlgError:
            pass
        vals, vecs = eigh(h, check_finite=False)
        keep = vals > RCOND * vals.max()
        return vecs[:, keep] * np.sqrt(vals[keep]), False

    def _root_pinv_t(self, v: np.ndarray) -> np.ndarray:
        """L⁺ᵀ v (for the component in train space)."""
        low, triangular = self._root
        if triangular:
            return solve_triangular(low, v, lower=True, trans="T", check_finite=False)
        return low @ (v / (low ** 2).sum(axis=0))  # V √Λ columns: L⁺ᵀ = V Λ^(-1/2) = L Λ⁻¹

    def _stacked(self, rows: np.ndarray) -> np.ndarray:
        """[w_1 Q_1[rows] … w_T Q_T[rows]] in float64 (len(rows) x Tk)."""
        return np.hstack([m.weight * np.asarray(m.q[rows], np.float64) for m in self.members])

    def _class_rows(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """Y = centred(Q_R) L in chunks of rows (never all of it at once)."""
        for w in self._centred_chunks(rows):
            yield w @ self._root[0]

    def _centred_chunks(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """centred(Q_R) = Q_R − its mean row, in chunks of rows (float64)."""
        mean = sum(self._stacked(rows[s:s + self.chunk]).sum(axis=0) for s in range(0, len(rows), self.chunk))
        mean = mean / len(rows)
        for s in range(0, len(rows), self.chunk):
            yield centred(self._stacked(rows[s:s + self.chunk]), mean)

    def _class_top(self, rows: np.ndarray) -> np.ndarray:
        """v₁: the top eigenvector of YᵀY. Up to DENSE_RANK columns of L it is formed (r x r,
        accumulated over row chunks); beyond, Lanczos (ARPACK) on v ↦ Lᵀ Wᵀ W L v with the
        centred rows W held once in float32 (m_c x Tk), so no Tk x Tk x m_c product is made."""
        rows = np.asarray(rows)
        low = self._root[0]
        if low.shape[1] <= self.dense_rank:
            return top_direction(sum(y.T @ y for y in self._class_rows(rows)))
        w = np.vstack([c.astype(np.float32) for c in self._centred_chunks(rows)])

        def gram_times(v: np.ndarray) -> np.ndarray:
            return low.T @ (w.T @ (w @ (low @ v.ravel()).astype(np.float32))).astype(np.float64)

        op = LinearOperator((low.shape[1],) * 2, matvec=gram_times, dtype=np.float64)
        return eigsh(op, k=1, which="LA", tol=1e-10, v0=np.ones(low.shape[1]))[1][:, 0]

    def _direct(self, rows: np.ndarray) -> bool:
        """Whether the class's centred rows are formed and decomposed as they are: when H is
        wider than DENSE_RANK (all-layer features: its root alone costs O((Tk)³), the Lanczos
        route then a matrix-vector product with it per iteration) and the rows fit in
        direct_bytes, e.g. the sample's 200 x 3,000 against T k = 8,650."""
        return self.offsets[-1] > self.dense_rank and len(rows) * self.shape[1] * 8 <= self.direct_bytes

    def _direct_pca(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coordinates, unit component) of the centred rows X, from the smaller of X Xᵀ and XᵀX."""
        x = self.rows(rows)
        x = centred(x, x.mean(axis=0))
        comp = x.T @ top_direction(x @ x.T) if len(x) <= x.shape[1] else top_direction(x.T @ x)
        comp /= np.linalg.norm(comp) or 1.0
        return x @ comp, comp

    def class_projection(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if self._direct(rows):
            return self._direct_pca(rows)[0]
        v = self._class_top(rows)
        return np.concatenate([y @ v for y in self._class_rows(rows)])

    def class_component(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if self._direct(rows):
            return self._direct_pca(rows)[1]
        u = self._root_pinv_t(self._class_top(rows))  # L⁺ᵀ v₁, split per member
        return self.times_b([u[a:b][None, :] for a, b in zip(self.offsets[:-1], self.offsets[1:])])[0]

    def to_dense(self) -> np.ndarray:
        check_dense_fits(self.shape)
        return self.fill_dense(np.zeros(self.shape, np.float32))

    def fill_dense(self, out: np.ndarray) -> np.ndarray:
        """S into `out` (val x train, float32, e.g. a memmap): one pass over B."""
        chunk = max(256, 2**26 // (8 * self.shape[0]))  # about 64 MB of products per member at a time
        return self.times_b([m.weight * np.asarray(m.q, np.float64) for m in self.members], out, chunk)

    def export(self, path: Path) -> Path:
        """S as a .npy file (refused when the disk lacks the space); returns the path."""
        path = Path(path)
        check_dense_fits(self.shape, "disk", path.parent)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=self.shape)
        self.fill_dense(out)
        out.flush()
        return path


def accumulate_gram_b(scores: FactoredScores) -> np.ndarray:
    """H = BᵀB in float64, every member's B side by side, in one pass over the stores."""
    h = np.zeros((scores.offsets[-1],) * 2, np.float64)
    for _, blocks in scores.b_chunks():
        b = np.hstack(blocks)
        h += b.T @ b
    return h
