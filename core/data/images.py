"""Decode a dataset's images once into an on-disk uint8 (N, S, S, 3) cache, read as a memory map.

The cache file is named by a hash of metadata.csv, the image size, the resize rule and each
image file's size and mtime, so an edited table or image is decoded again and a cache hit
opens no image. Images are decoded straight into the file (a shared memory map), so neither
decoding nor reading grows the process's own memory with the number of images: what is read
sits in the page cache, which the kernel reclaims. Without a cache folder the file is an
unlinked temporary one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from core.errors import DatasetError, DatasetIssue, brief, row_issue
from core.progress import ReportFn

MEAN, STD = 0.5, 0.25  # the models' input normalisation (core/train/models.py converts for others)
_CACHE_VERSION = "1"  # bump when image preprocessing changes, so old caches are not reused
_DECODE_CHUNK = 4096  # images submitted to the threads at once


def load_images(
    csv: Path,
    df: pd.DataFrame,
    paths: list[Path | None],
    size: int,
    cache_dir: Path | None,
    report: ReportFn,
    resize: int | None = None,
) -> np.ndarray:
    """The images as a read-only memory map of the cache file (decoded into it on a miss)."""
    shape = (len(paths), size, size, 3)
    if cache_dir is None:
        with tempfile.TemporaryFile() as fh:  # unlinked: the memory map keeps it alive
            images = np.memmap(fh, np.uint8, "w+", shape=shape)
            _decode_into(csv, df, paths, size, resize, report, images)
            return np.memmap(fh, np.uint8, "r", shape=shape)
    key = _cache_key(csv, paths, size, f"crop{resize}" if resize else "")
    cache = Path(cache_dir) / f"images-{key}.npy"
    if cache.is_file():
        report("loading images", len(paths), len(paths))
        return np.load(cache, mmap_mode="r")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _decode_into(csv, df, paths, size, resize, report, images)
        images.flush()
        del images
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(cache, mmap_mode="r")


def _decode_into(csv: Path, df: pd.DataFrame, paths: list[Path | None], size: int, resize: int | None,
                 report: ReportFn, out: np.ndarray) -> None:
    issues = decode_images(csv, df, paths, size, report, out=out, resize=resize)
    if issues:
        raise DatasetError(issues)


def _cache_key(csv: Path, paths: list[Path | None], size: int, rule: str = "") -> str:
    """Hash of the table, the size, the resize rule (none: squash) and every image's size and mtime."""
    digest = hashlib.sha256((f"{_CACHE_VERSION}|{size}|" + (f"{rule}|" if rule else "")).encode())
    digest.update(csv.read_bytes())
    for path in paths:
        stat = os.stat(path)  # every path is set once validation passed
        digest.update(f"|{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _read_image(path: Path, size: int | None, resize: int | None = None) -> np.ndarray:
    """Decode fully as RGB; unless size is None, bilinear-resize to size x size (resize None), or
    as torchvision's Resize(resize) + CenterCrop(size): the shorter side to `resize`, the centre
    size x size kept."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if size is not None and resize is None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    elif size is not None and resize is not None:
        w, h = rgb.size
        short, long = min(w, h), max(w, h)
        scaled = (resize, int(resize * long / short))  # torchvision's rounding of the longer side
        new_w, new_h = scaled if w <= h else scaled[::-1]
        if (new_w, new_h) != (w, h):
            rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8)


def decode_images(
    csv: Path,
    df: pd.DataFrame,
    paths: list[Path | None],
    size: int | None,
    report: ReportFn,
    out: np.ndarray | None = None,
    resize: int | None = None,
) -> list[DatasetIssue]:
    """Decode every image on threads (PIL releases the GIL), each thread writing its images
    straight into `out` when given (so no decoded image waits in memory).

    Returns an issue per image PIL cannot read; reports progress about every 1%.
    """
    todo = [i for i, path in enumerate(paths) if path is not None]
    total, step = len(todo), max(1, len(todo) // 100)

    def work(i: int) -> tuple[int, Exception | None]:
        try:
            array = _read_image(paths[i], size, resize)
        except Exception as exc:  # PIL decoders raise many exception types on bad files
            return i, exc
        if out is not None:
            out[i] = array
        return i, None

    issues = []
    report("loading images", 0, total)
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4)) as pool:
        chunks = (pool.map(work, todo[start:start + _DECODE_CHUNK]) for start in range(0, total, _DECODE_CHUNK))
        for done, (i, exc) in enumerate((r for chunk in chunks for r in chunk), start=1):
            if exc is not None:
                line, name = df.index[i], df["filename"].iat[i]
                detail = f"image file {paths[i]} cannot be read ({brief(exc)})"
                issues.append(row_issue(csv, line, "filename", name, detail, file=paths[i]))
            if done % step == 0 or done == total:
                report("loading images", done, total)
    return issues


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC images -> normalised float NCHW tensor (uint8 crosses to a GPU, from pinned memory)."""
    array = np.ascontiguousarray(images)
    x = torch.from_numpy(array if array.flags.writeable else array.copy())
    if torch.device(device).type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return (x.permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD
