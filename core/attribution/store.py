"""Train features on disk: features.npy (n x k float32, memory-mapped) and p.npy beside a
metadata.json that names the config that made them and refuses to be reused under another."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.io import read_json, write_json_atomic, write_npy_atomic
from core.progress import Reporter, silent
from core.training import to_tensor


class FeatureConfigMismatch(ValueError):
    """The folder holds features made under another config."""


def load_or_featurize(folder: Path, meta: dict, model: nn.Module, featurizer, images: np.ndarray,
                      idx: np.ndarray, labels: np.ndarray, batch_size: int,
                      device: torch.device, report: Reporter = silent) -> tuple[np.ndarray, np.ndarray]:
    """Features (memmap) and true-class probabilities of examples `idx`, computed once.

    A complete store with the same metadata is reused; a store with other metadata raises
    FeatureConfigMismatch instead of silently mixing features of different configs.
    """
    folder = Path(folder)
    meta = {**meta, "n": int(len(idx)), "k": int(featurizer.dim)}
    existing = folder / "metadata.json"
    if existing.exists():
        old = read_json(existing)
        if {k: v for k, v in old.items() if k != "complete"} != meta:
            raise FeatureConfigMismatch(f"{folder}: features were made with another config: {old} != {meta}")
        if old.get("complete"):
            return np.load(folder / "features.npy", mmap_mode="r"), np.load(folder / "p.npy")
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(existing, {**meta, "complete": False})
    feats = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32,
                                      shape=(len(idx), featurizer.dim))
    probs = featurize(model, featurizer, images, idx, labels, batch_size, device, report, out=feats)
    feats.flush()
    write_npy_atomic(folder / "p.npy", probs)
    write_json_atomic(existing, {**meta, "complete": True})
    return np.load(folder / "features.npy", mmap_mode="r"), probs


def featurize(model: nn.Module, featurizer, images: np.ndarray, idx: np.ndarray, labels: np.ndarray,
              batch_size: int, device: torch.device, report: Reporter = silent,
              out: np.ndarray | None = None) -> np.ndarray:
    """Fill `out` (or a new array) with g(z) for examples idx in batches; return p per example."""
    model.eval().to(device)
    if out is None:
        out = np.zeros((len(idx), featurizer.dim), np.float32)
    probs = np.zeros(len(idx), np.float32)
    y_all = torch.as_tensor(np.asarray(labels)[idx], dtype=torch.int64)
    for start in range(0, len(idx), batch_size):
        sl = slice(start, start + batch_size)
        x = to_tensor(images[np.asarray(idx[sl])], device)
        feats, p = featurizer(model, x, y_all[sl].to(device))
        out[sl] = feats.detach().float().cpu().numpy()
        probs[sl] = p.float().cpu().numpy()
        report("featurizing", min(start + batch_size, len(idx)), len(idx))
    return probs
