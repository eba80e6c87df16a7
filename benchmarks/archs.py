"""Issue 24's benchmark: the built-in sample in Waterbirds format, a torchvision model at 224 px,
random init, on the CPU.

    python -m benchmarks.archs [--arch resnet50 resnet18] [--image-size 224] [--train N] [--workdir DIR]

The sample is written in the Waterbirds layout (species folders, metadata.csv with
img_filename, y, split, place) and imported with `d3m import waterbirds`, as a user's download
would be. Per arch, in a child process of its own: the time of one training epoch (batch 32,
Adam, crop + flip augmentation: the Waterbirds recipe but 1 epoch) over the training split (or
its first N examples), then the attribution of that model with the default settings (final-layer
scope: penultimate features, projected to 2,048; every training example featurized, every
validation example scored), in seconds and in epochs; peak RSS (VmHWM, which counts the pages
of the memory-mapped image cache that were read) and peak anonymous memory (the process's own,
sampled every 20 ms). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.measure import run_child
from core.config import DEFAULT_DATA

BIRDS, PLACES, SPLITS = {"landbird": 0, "waterbird": 1}, {"land": 0, "water": 1}, {"train": 0, "val": 1, "test": 2}


def waterbirds_sample(out: Path) -> Path:
    """The built-in sample copied into the Waterbirds layout and imported; returns the table."""
    from core.data.layouts import WATERBIRDS_TABLE, import_waterbirds

    if (out / WATERBIRDS_TABLE).exists():
        return out / WATERBIRDS_TABLE
    meta = pd.read_csv(Path(DEFAULT_DATA) / "metadata.csv")
    rows = []
    for _, row in meta.iterrows():
        name = f"{BIRDS[row.label]:03d}.{row.label}/{Path(row.filename).name}"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(DEFAULT_DATA) / row.filename, out / name)
        rows.append({"img_filename": name, "y": BIRDS[row.label], "split": SPLITS[row.split],
                     "place": PLACES[row.place]})
    pd.DataFrame(rows).to_csv(out / "metadata.csv", index=False)
    return import_waterbirds(out)


def measure(arch: str, table: Path, image_size: int, n_train: int | None, workdir: Path) -> dict:
    """One arch, in this process (run by main in a child of its own)."""
    import torch

    from benchmarks.measure import peak_mb, watch_anon
    from core.config import DataConfig, ModelConfig, TrainConfig, TrakConfig
    from core.data.dataset import load_dataset
    from core.attribution.trak import model_factors
    from core.train.models import build_model
    from core.train.training import train

    anon = watch_anon()
    start = time.perf_counter()
    data = load_dataset(DataConfig(str(table), image_size=image_size), cache_dir=workdir / "cache")
    load_s = time.perf_counter() - start
    train_idx, val_idx = data.idx("train")[:n_train], data.idx("val")
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch), data.n_classes, image_size)
    start = time.perf_counter()
    train(model, data.images, data.labels, train_idx, TrainConfig(epochs=1, batch_size=32, augment="crop_flip"),
          torch.device("cpu"))
    epoch_s = time.perf_counter() - start
    start = time.perf_counter()
    model_factors(model, data.images, data.labels, train_idx, val_idx, TrakConfig(), 1, torch.device("cpu"),
                  workdir / f"features_{arch}_{len(train_idx)}")  # as the analysis: factors, no val x train matrix
    attribution_s = time.perf_counter() - start
    shutil.rmtree(workdir / f"features_{arch}_{len(train_idx)}")
    return {"arch": arch, "image_size": image_size, "train": int(len(train_idx)), "val": int(len(val_idx)),
            "load_s": round(load_s, 1), "epoch_s": round(epoch_s, 1),
            "attribution_s": round(attribution_s, 1), "attribution_epochs": round(attribution_s / epoch_s, 2),
            "peak_rss_mb": round(peak_mb()), "peak_anon_mb": round(anon[0]),
            "images_array_mb": round(data.images.nbytes / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["resnet50", "resnet18"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train", type=int, default=None, help="time the first N training examples only")
    parser.add_argument("--workdir", type=Path, default=Path("workdir/bench_archs"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = waterbirds_sample(args.workdir / "waterbirds_sample")
    if args.child:
        print(json.dumps(measure(args.child, table, args.image_size, args.train, args.workdir)))
        return
    results = []
    for arch in args.arch:
        argv = ["--child", arch, "--image-size", str(args.image_size), "--workdir", str(args.workdir)]
        r = run_child("benchmarks.archs", argv + (["--train", str(args.train)] if args.train else []), arch)
        results.append(r)
        print(f"{arch:10s} {r['image_size']} px, {r['train']} train / {r['val']} val: epoch {r['epoch_s']} s, "
              f"attribution {r['attribution_s']} s = {r['attribution_epochs']} epochs, peak RSS {r['peak_rss_mb']} MB "
              f"(own memory {r['peak_anon_mb']} MB; images {r['images_array_mb']} MB on disk)", file=sys.stderr)
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
