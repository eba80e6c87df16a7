"""Random projections for TRAK's g(z) = Pᵀ ∇θ f(z) (seeds/001 section 4).

- `DenseProjector`: the reference: one Gaussian p x k matrix scaled 1/√k, generated in
  seeded row blocks so that it never has to be held whole.
- `KroneckerProjector`: for one linear/conv layer whose per-example gradient is Σ_l δ_l a_lᵀ,
  project each side separately, (P_outᵀ δ)(P_inᵀ a)ᵀ, i.e. P = P_out ⊗ P_in (LoGra). The cost
  is that of two thin matrix products instead of p x k per example.
- `SparseProjector`: a sparse sign (CountSketch-style) JL projection: each input coordinate
  is added, with a random sign and weight 1/√s, into s random output coordinates; cost
  O(s·p) per example instead of O(p·k), no p x k matrix stored (Clarkson & Woodruff 2013).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BLOCK_ROWS = 16384  # rows of the dense matrix generated at a time


def gaussian(rows: int, cols: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A seeded N(0, 1/cols) matrix: E[P Pᵀ] = I, so inner products are kept in expectation."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(rows, cols, generator=gen) / math.sqrt(cols)).to(device)


class DenseProjector:
    """x (B, p) -> x P (B, k) with P Gaussian p x k, cached whole when it fits `cache_mb`."""

    def __init__(self, dim_in: int, dim_out: int, seed: int, device: torch.device | str = "cpu",
                 cache_mb: float = 512):
        self.dim_in, self.dim_out, self.seed, self.device = dim_in, dim_out, seed, device
        n_blocks = math.ceil(dim_in / BLOCK_ROWS)
        self._blocks = None
        if dim_in * dim_out * 4 / 2**20 <= cache_mb:
            self._blocks = [self._block(b) for b in range(n_blocks)]
        self.n_blocks = n_blocks

    def _block(self, b: int) -> torch.Tensor:
        rows = min(BLOCK_ROWS, self.dim_in - b * BLOCK_ROWS)
        return gaussian(rows, self.dim_out, self.seed * 100_003 + b, self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.dim_out, device=x.device, dtype=x.dtype)
        for b in range(self.n_blocks):
            block = self._blocks[b] if self._blocks is not None else self._block(b)
            out += x[:, b * BLOCK_ROWS:(b + 1) * BLOCK_ROWS] @ block.to(x.dtype)
        return out


@dataclass
class KroneckerProjector:
    """Per-layer factored projection of Σ_l δ_l a_lᵀ to k_out x k_in features.

    A side whose dimension is already at most its target keeps the identity (no noise added).
    """

    p_in: torch.Tensor | None  # (d_in, k_in) or None for identity
    p_out: torch.Tensor | None  # (d_out, k_out) or None for identity

    @classmethod
    def make(cls, d_in: int, d_out: int, k: int, seed: int,
             device: torch.device | str = "cpu") -> "KroneckerProjector":
        k_out = min(d_out, 2 ** int(math.log2(max(1, math.isqrt(k)))))
        k_in = max(1, k // k_out)
        if d_out <= k_out:
            k_in = max(1, k // d_out)
        p_out = None if d_out <= k_out else gaussian(d_out, k_out, 2 * seed + 1, device)
        p_in = None if d_in <= k_in else gaussian(d_in, k_in, 2 * seed, device)
        return cls(p_in, p_out)

    def dim(self, d_in: int, d_out: int) -> int:
        k_in = d_in if self.p_in is None else self.p_in.shape[1]
        k_out = d_out if self.p_out is None else self.p_out.shape[1]
        return k_in * k_out

    def __call__(self, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """a (B, L, d_in), delta (B, L, d_out) -> (B, k_out * k_in) = vec Σ_l (P_outᵀδ_l)(P_inᵀa_l)ᵀ."""
        return self.combine(a if self.p_in is None else a @ self.p_in, delta)

    def combine(self, a_projected: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The same from rows already projected on the input side, a_projected (B, L, k_in)."""
        if self.p_out is not None:
            delta = delta @ self.p_out
        return torch.einsum("blo,bli->boi", delta, a_projected).reshape(delta.shape[0], -1)


class SparseProjector:
    """x (B, p) -> (B, k) by index_add: E[P Pᵀ] = I, so inner products are kept in expectation.

    With s = `nnz` nonzeros per input coordinate (s = 1: CountSketch), the inner-product
    error has variance ≤ 2‖x‖²‖y‖²/k, as for a dense Gaussian projection. A sum of sparse
    projections of disjoint blocks with independent seeds is itself one such projection of the
    concatenation, so a featurizer can project layer by layer into one output.
    """

    def __init__(self, dim_in: int, dim_out: int, seed: int, device: torch.device | str = "cpu", nnz: int = 1):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.dim_out = dim_out
        self.buckets = torch.randint(0, dim_out, (nnz, dim_in), generator=gen).to(device)
        signs = torch.randint(0, 2, (nnz, dim_in), generator=gen).float() * 2 - 1
        self.signs = (signs / math.sqrt(nnz)).to(device)

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Add x's projection into `out` (B, k) when given, else into a new zero tensor."""
        if out is None:
            out = torch.zeros(x.shape[0], self.dim_out, device=x.device, dtype=x.dtype)
        for buckets, signs in zip(self.buckets, self.signs):
            out.index_add_(1, buckets, x * signs.to(x.dtype))
        return out
