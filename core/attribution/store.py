"""Train features on disk: features.npy (n x k float32), p.npy and gram.npy (ΦᵀΦ, float64)
beside a metadata.json that names the config that made them and refuses to be reused under
another.

Features are written in chunks of `chunk_size` rows while ΦᵀΦ is accumulated on the fly (a
finished chunk is kept across a kill or a full disk and reused by the rerun), and
read back in chunks with plain file reads (not a memory map, whose pages would count towards
the process's resident memory), so peak memory is set by the chunk size, not by n.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from core.attribution.scorer import accumulate
from core.io import read_json, write_json_atomic, write_npy_atomic
from core.progress import Reporter, silent
from core.data.images import to_tensor

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
    if claim(folder, meta, FeatureConfigMismatch):
        return open_store(folder)
    gram, probs = _write(folder / "features.npy", model, featurizer, images, idx, labels, batch_size,
                         chunk_size, device, report)
    return _finish(folder, meta, gram, probs)


def claim(folder: Path, meta: dict, mismatch: type[ValueError]) -> bool:
    """Whether `folder` already holds a complete store made under `meta`; otherwise mark it
    as one being written under `meta`. A folder made under other metadata raises `mismatch`
    (shared by the feature store and the factor store, core/attribution/factors.py)."""
    existing = folder / "metadata.json"
    if existing.exists():
        old = read_json(existing)
        if {k: v for k, v in old.items() if k != "complete"} != meta:
            raise mismatch(f"{folder}: made with another config: {old} != {meta}")
        if old.get("complete"):
            return True
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(existing, {**meta, "complete": False})
    return False


def _finish(folder: Path, meta: dict, gram: np.ndarray, probs: np.ndarray) -> TrainFeatures:
    write_npy_atomic(folder / "gram.npy", gram)
    write_npy_atomic(folder / "p.npy", probs)
    write_json_atomic(folder / "metadata.json", {**meta, "complete": True})
    return open_store(folder)


def save_store(folder: Path, meta: dict, features: np.ndarray, probs: np.ndarray) -> TrainFeatures:
    """A complete store from features computed elsewhere (an ensemble member on Ray), under
    the metadata `load_or_featurize` would give it; ΦᵀΦ is accumulated here the same way."""
    folder = Path(folder)
    meta = {**meta, "format": FORMAT, "n": int(features.shape[0]), "k": int(features.shape[1])}
    claim(folder, meta, FeatureConfigMismatch)
    write_npy_atomic(folder / "features.npy", np.asarray(features, np.float32))
    gram = np.zeros((features.shape[1],) * 2, np.float64)
    for start in range(0, len(features), 4096):
        accumulate(gram, features[start:start + 4096])
    return _finish(folder, meta, gram, np.asarray(probs, np.float32))


def open_store(folder: Path) -> TrainFeatures:
    """A complete store (its metadata says so), features left on disk."""
    folder = Path(folder)
    meta = read_json(folder / "metadata.json")
    if not meta.get("complete"):
        raise ValueError(f"{folder}: the feature store is incomplete (its analysis did not finish)")
    return TrainFeatures(folder / "features.npy", meta["n"], meta["k"], np.load(folder / "p.npy"),
                         np.load(folder / "gram.npy"))


def _write(path: Path, model: nn.Module, featurizer, images: np.ndarray, idx: np.ndarray,
           labels: np.ndarray, batch_size: int, chunk_size: int, device: torch.device,
           report: Reporter) -> tuple[np.ndarray, np.ndarray]:
    """Stream features to `path` (a .npy file) in chunks; return (ΦᵀΦ, p).

    Rows go to their place in `features.tmp`; once a chunk's rows are on disk (fsync), its
    probabilities are written atomically as `chunks-<rows per chunk>/p_<first row>.npy`, the
    chunk's completion marker. A rerun after a kill or a full disk reads finished chunks back
    instead of featurizing them again; ΦᵀΦ is accumulated in the same order either way, so
    the result is the same. Rows without a marker are never trusted."""
    k, n = featurizer.dim, len(idx)
    step = max(batch_size, chunk_size // batch_size * batch_size)  # whole batches per chunk
    tmp, done = path.with_suffix(".tmp"), path.parent / f"chunks-{step}"
    for other in path.parent.glob("chunks-*"):
        if other != done:
            shutil.rmtree(other)
    if not done.is_dir():
        tmp.unlink(missing_ok=True)
    done.mkdir(exist_ok=True)
    gram = np.zeros((k, k), np.float64)
    probs = np.zeros(n, np.float32)
    with open(tmp, "r+b" if tmp.exists() else "w+b") as fh:
        offset = _header(fh, n, k)
        for start in range(0, n, step):
            rows, marker = min(step, n - start), done / f"p_{start}.npy"
            fh.seek(offset + start * k * 4)
            if marker.exists():
                block = np.fromfile(fh, np.float32, rows * k).reshape(rows, k)
                probs[start:start + rows] = np.load(marker)
                report("featurizing (chunk reused)", start + rows, n)
            else:
                block = np.zeros((rows, k), np.float32)
                probs[start:start + rows] = featurize(
                    model, featurizer, images, idx[start:start + rows], labels, batch_size, device,
                    _offset(report, start, n), out=block)
                fh.write(memoryview(block).cast("B"))  # the bytes without a copy (tobytes makes one)
                fh.flush()
                os.fsync(fh.fileno())
                write_npy_atomic(marker, probs[start:start + rows])
            accumulate(gram, block)
    tmp.replace(path)
    shutil.rmtree(done)
    return gram, probs


def _header(fh, n: int, k: int) -> int:
    """Write the .npy header of an (n, k) float32 array into a new file, or skip the one
    already there; returns where the rows begin."""
    fh.seek(0, os.SEEK_END)
    if fh.tell() == 0:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                 "shape": (n, k)})
        return fh.tell()
    fh.seek(0)
    np.lib.format.read_magic(fh)
    shape, _, _ = np.lib.format.read_array_header_1_0(fh)
    if tuple(shape) != (n, k):
        raise ValueError(f"{fh.name}: partial features of shape {shape}, expected {(n, k)}")
    return fh.tell()


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
