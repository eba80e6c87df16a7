"""The dense TRAK scores of a (small) analysis, rebuilt by the tests from the raw stored files.

Independent of core/attribution/factored.py: it reads the files the analysis wrote
(ensemble/factors/q_<t>.npy, ensemble/features_<t>/features.npy and p.npy) with numpy and
writes the TRAK ensemble out as the seed document states it, S = (1/T) Σ_t Q_t ((1 - p_t) Φ_t)ᵀ.
An analysis made before the factors has the matrix itself (scores.npy).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.runs.store import Run


def dense_scores(run: Run | Path) -> np.ndarray:
    """S (validation x train, float64) of an analysis run folder."""
    folder = Path(getattr(run, "path", run))
    if (folder / "scores.npy").exists():
        return np.load(folder / "scores.npy").astype(np.float64)
    meta = json.loads((folder / "ensemble/factors/metadata.json").read_text())
    total = 0.0
    for t, member in enumerate(meta["members"]):
        q = np.load(folder / f"ensemble/factors/q_{t}.npy").astype(np.float64)
        store = folder / "ensemble" / member["features"]
        phi = np.load(store / "features.npy").astype(np.float64)
        p = np.load(store / "p.npy").astype(np.float64)
        total = total + q @ (phi * (1 - p)[:, None]).T
    return total / len(meta["members"])
