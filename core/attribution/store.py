"""Train features on disk: features.npy (n x k float32), p.npy and gram.npy (ΦᵀΦ, float64)
beside a metadata.json that names the config that made them and refuses to be reused under
another.

Features are written in chunks of `chunk_size` rows while ΦᵀΦ is accumulated on the fly, and
read back in chunks with plain file reads (not a memory map, whose pages would count towards
the process's resident memory), so peak memory is set by the chunk size, not by n.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from core.attribution.scorer import accumulate
from core.io import read_json, write_json_atomic, write_npy_atomic
from core.progress import Reporter, silent
from core.training import to_tensor

FORMAT = 2  # bumped when the store's layout changes: older stores are refused, not misread


class FeatureConfigMismatch(ValueError):
    """The folder holds features made under another config."""


@dataclass
class TrainFeatures:
    """A complete store: p (n,), gram (k x k) in memory; the features streamed from disk."""

    path: Path
    n: int
    k: int
    p: np.ndarray
    gram: np.ndarray

    def chunks(self, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) pairs of at most `chunk` rows, read from disk one at a time."""
        with open(self.path, "rb") as fh:
            np.lib.format.read_magic(fh)
            np.lib.format.read_array_header_1_0(fh)
            for start in range(0, self.n, chunk):
                rows = min(chunk, self.n - start)
                yield start, np.fromfile(fh, np.float32, rows * self.k).reshape(rows, self.k)


def load_or_featurize(folder: Path, meta: dict, model: nn.Module, featurizer, images: np.ndarray,
                      idx: np.ndarray, labels: np.ndarray, batch_size: int, chunk_size: int,
                      device: torch.device, report: Reporter = silent) -> TrainFeatures:
    """Features, ΦᵀΦ and true-class probabilities of examples `idx`, computed once.

    A complete store with the same metadata is reused; a store with other metadata raises
    FeatureConfigMismatch instead of silently mixing features of different configs.
    """
    folder = Path(folder)
    meta = {**meta, "format": FORMAT, "n": int(len(idx)), "k": int(featurizer.dim)}
    existing = folder / "metadata.json"
    if existing.exists():
        old = read_json(existing)
        if {k: v for k, v in old.items() if k != "complete"} != meta:
            raise FeatureConfigMismatch(f"{folder}: features were made with another config: {old} != {meta}")
        if old.get("complete"):
            return _open(folder, meta)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(existing, {**meta, "complete": False})
    gram, probs = _write(folder / "features.npy", model, featurizer, images, idx, labels, batch_size,
                         chunk_size, device, report)
    write_npy_atomic(folder / "gram.npy", gram)
    write_npy_atomic(folder / "p.npy", probs)
    write_json_atomic(existing, {**meta, "complete": True})
    return _open(folder, meta)


def _open(folder: Path, meta: dict) -> TrainFeatures:
    return TrainFeatures(folder / "features.npy", meta["n"], meta["k"], np.load(folder / "p.npy"),
                         np.load(folder / "gram.npy"))


def _write(path: Path, model: nn.Module, featurizer, images: np.ndarray, idx: np.ndarray,
           labels: np.ndarray, batch_size: int, chunk_size: int, device: torch.device,
           report: Reporter) -> tuple[np.ndarray, np.ndarray]:
    """Stream features to `path` (a .npy file) in chunks; return (ΦᵀΦ, p)."""
    k = featurizer.dim
    gram = np.zeros((k, k), np.float64)
    probs = np.zeros(len(idx), np.float32)
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                     "shape": (len(idx), k)})
            step = max(batch_size, chunk_size // batch_size * batch_size)  # whole batches per chunk
            for start in range(0, len(idx), step):
                block = np.zeros((min(step, len(idx) - start), k), np.float32)
                probs[start:start + len(block)] = featurize(
                    model, featurizer, images, idx[start:start + len(block)], labels, batch_size, device,
                    _offset(report, start, len(idx)), out=block)
                accumulate(gram, block)
                fh.write(block.tobytes())
    except BaseException:  # e.g. disk full: no partial file is left to be mistaken for features
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return gram, probs


def _offset(report: Reporter, start: int, total: int) -> Reporter:
    return lambda stage, done, _: report(stage, start + done, total)


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
