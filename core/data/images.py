"""Decode a dataset's images into one uint8 (N, S, S, 3) array, with an on-disk cache.

The cache file is named by a hash of metadata.csv, the image size and each image file's size
and mtime, so an edited table or image is decoded again and a cache hit opens no image.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from core.errors import DatasetError, DatasetIssue, brief, row_issue
from core.io import write_npy_atomic
from core.progress import ReportFn

MEAN, STD = 0.5, 0.25  # the models' input normalisation
_CACHE_VERSION = "1"  # bump when image preprocessing changes, so old caches are not reused


def load_images(
    csv: Path,
    df: pd.DataFrame,
    paths: list[Path | None],
    size: int,
    cache_dir: Path | None,
    report: ReportFn,
) -> np.ndarray:
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"images-{_cache_key(csv, paths, size)}.npy"
        if cache.is_file():
            report("loading images", len(paths), len(paths))
            return np.load(cache, mmap_mode="r")
    images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    issues = decode_images(csv, df, paths, size, report, out=images)
    if issues:
        raise DatasetError(issues)
    if cache is not None:
        write_npy_atomic(cache, images)
    return images


def _cache_key(csv: Path, paths: list[Path | None], size: int) -> str:
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{size}|".encode())
    digest.update(csv.read_bytes())
    for path in paths:
        stat = Path(path).stat()  # every path is set once validation passed
        digest.update(f"|{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _read_image(path: Path, size: int | None) -> np.ndarray:
    """Decode fully as RGB, resized (bilinear) to size x size unless size is None."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode_images(
    csv: Path,
    df: pd.DataFrame,
    paths: list[Path | None],
    size: int | None,
    report: ReportFn,
    out: np.ndarray | None = None,
) -> list[DatasetIssue]:
    """Decode every image on threads (PIL releases the GIL), into `out` when given.

    Returns an issue per image PIL cannot read; reports progress about every 1%.
    """
    todo = [i for i, path in enumerate(paths) if path is not None]
    total, step = len(todo), max(1, len(todo) // 100)

    def work(i: int) -> tuple[int, np.ndarray | None, Exception | None]:
        try:
            return i, _read_image(paths[i], size), None
        except Exception as exc:  # PIL decoders raise many exception types on bad files
            return i, None, exc

    issues = []
    report("loading images", 0, total)
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4)) as pool:
        for done, (i, array, exc) in enumerate(pool.map(work, todo), start=1):
            if exc is not None:
                line, name = df.index[i], df["filename"].iat[i]
                detail = f"image file {paths[i]} cannot be read ({brief(exc)})"
                issues.append(row_issue(csv, line, "filename", name, detail, file=paths[i]))
            elif out is not None:
                out[i] = array
            if done % step == 0 or done == total:
                report("loading images", done, total)
    return issues


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC images -> normalised float NCHW tensor."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return (x.permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD
