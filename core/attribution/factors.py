"""The factor store: an analysis's TRAK scores as per-member factors on disk (issue 20).

    <run>/ensemble/features_<t>/   member t's feature store (store.py): Φ_t, p_t, Φ_tᵀΦ_t
    <run>/ensemble/factors/
        metadata.json   what made them (train and validation sizes, ridge, each member's feature
                        metadata); refused under another config as a feature store is, and
                        "complete" once gram_b.npy is written
        q_<t>.npy       Q_t = G_val (Φ_tᵀΦ_t + λI)⁻¹ (validation x k_t, float32)
        gram_b.npy      H = BᵀB over all members side by side (Tk x Tk, float64)

No file holds validation x train entries; factored.py computes every selection from these.
`open_scores` opens a run folder's scores: its factors, or the dense scores.npy of an analysis
made before them (read as before).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.attribution.factored import FactoredScores, Member, accumulate_gram_b
from core.attribution.scores import DenseScores, Scores
from core.attribution.store import claim, open_store
from core.io import read_json, write_json_atomic, write_npy_atomic

FORMAT = 1  # bumped when the layout changes: older factor stores are refused, not misread
FOLDER = "ensemble/factors"  # inside a run folder


class FactorConfigMismatch(ValueError):
    """The folder holds factors made under another config."""


class FactorStore:
    """The factors of one analysis being written: member by member, then H."""

    def __init__(self, folder: Path, meta: dict):
        """`folder` is <run>/ensemble/factors; meta has "members": one dict per member naming
        its feature store ("features": folder name beside this one) and what made it."""
        self.folder = Path(folder)
        self.meta = {**meta, "format": FORMAT}
        claim(self.folder, self.meta, FactorConfigMismatch)

    def has(self, t: int) -> bool:
        """Whether member t's Q is stored (written whole, atomically)."""
        return (self.folder / f"q_{t}.npy").exists()

    def save_q(self, t: int, q: np.ndarray) -> None:
        write_npy_atomic(self.folder / f"q_{t}.npy", np.asarray(q, np.float32))

    def finish(self) -> FactoredScores:
        """H over every member's B in one pass over the feature stores, then complete."""
        scores = open_factors(self.folder, partial=True)
        write_npy_atomic(self.folder / "gram_b.npy", accumulate_gram_b(scores))
        write_json_atomic(self.folder / "metadata.json", {**self.meta, "complete": True})
        return open_factors(self.folder)


def open_factors(folder: Path, partial: bool = False) -> FactoredScores:
    """A complete factor store (folder = <run>/ensemble/factors); each member weighs 1/T.
    `partial`: every member's Q is written but H may not be (it is then computed on demand)."""
    folder = Path(folder)
    meta = read_json(folder / "metadata.json")
    if meta.get("format") != FORMAT:
        raise FactorConfigMismatch(f"{folder}: factor store format {meta.get('format')}, this version reads {FORMAT}")
    if not partial and not meta.get("complete"):
        raise ValueError(f"{folder}: the factors are incomplete (the analysis did not finish its ensemble)")
    specs = meta["members"]
    members = [Member(np.load(folder / f"q_{t}.npy", mmap_mode="r"), open_store(folder.parent / spec["features"]),
                      1.0 / len(specs)) for t, spec in enumerate(specs)]
    n, m = meta["n"], meta["m"]
    for t, member in enumerate(members):
        if member.q.shape[0] != m or member.train.n != n or member.q.shape[1] != member.train.k:
            raise ValueError(f"{folder}: member {t}'s factors have shapes Q {member.q.shape}, features "
                             f"{(member.train.n, member.train.k)}; expected {m} validation and {n} train rows")
    gram_b = None if partial else np.load(folder / "gram_b.npy")
    return FactoredScores(members, gram_b)


def open_scores(run_folder: Path) -> Scores:
    """The TRAK scores of an analysis run folder: factored, or an older analysis's scores.npy."""
    run_folder = Path(run_folder)
    meta = run_folder / FOLDER / "metadata.json"
    if meta.exists() and read_json(meta).get("complete"):
        return open_factors(run_folder / FOLDER)
    if (run_folder / "scores.npy").exists():
        return DenseScores(np.load(run_folder / "scores.npy", mmap_mode="r"))
    raise FileNotFoundError(f"{run_folder}: no attribution scores (neither {FOLDER} nor scores.npy): "
                            "has its analysis finished?")
