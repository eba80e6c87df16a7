"""Peak memory against the number of images at 224 px: the images stream from the on-disk cache.

    python -m benchmarks.image_memory [--n 1000 2000 4000] [--image-size 224] [--workdir DIR]

For each n, a generated dataset of n images (the sample's generator) is loaded at 224 px in a
child process of its own (the images decoded into the memory-mapped cache), a small CNN trains
one epoch over its training split (every image read once, in batches) and predicts every image.
Reported: the size one in-memory array of all the images would take; the peak of the process's
own memory (RssAnon, sampled every 20 ms), which should stay flat as n grows; and peak RSS
(VmHWM), which also counts the pages of the image cache the process read, memory the kernel
reclaims whenever it needs it. With `--malloc returned` the children run with
MALLOC_MMAP_THRESHOLD_=65536, so glibc hands freed blocks back at once and the own-memory peak
is what is in use; by default glibc keeps freed blocks for reuse (a cache that grows with the
length of the run up to a bound, and makes training several times faster on this machine).
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.measure import run_child
from sample_data.make_sample import COUNTS

TOTAL = sum(COUNTS.values())  # images of the sample at scale 1


def measure(root: Path, image_size: int, workdir: Path) -> dict:
    import numpy as np
    import torch

    from benchmarks.measure import peak_mb, status_mb, watch_anon
    from core.config import DataConfig, ModelConfig, TrainConfig
    from core.data.dataset import load_dataset
    from core.train.models import build_model
    from core.train.training import predict_logits, train

    model = build_model(ModelConfig(width=4), 2, image_size)  # torch's allocations before the baseline
    base_anon = status_mb("RssAnon")
    anon = watch_anon()
    start = time.perf_counter()
    data = load_dataset(DataConfig(str(root), image_size=image_size), cache_dir=workdir / "cache")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    train(model, data.images, data.labels, data.idx("train"), TrainConfig(epochs=1, batch_size=32),
          torch.device("cpu"))
    predict_logits(model, data.images, np.arange(len(data.labels)), torch.device("cpu"))
    return {"n": len(data.labels), "images_array_mb": round(data.images.nbytes / 2**20),
            "peak_own_mb": round(anon[0]), "own_growth_mb": round(anon[0] - base_anon),
            "peak_rss_mb": round(peak_mb()), "load_s": round(load_s, 1),
            "train_predict_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=Path("workdir/bench_image_memory"))
    parser.add_argument("--malloc", choices=["default", "returned"], default="default")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.image_size, args.workdir)))
        return
    from sample_data.make_sample import generate

    rows = []
    for n in args.n:
        root = args.workdir / f"data_{n}"
        if not (root / "metadata.csv").exists():
            generate(root, seed=0, scale=n / TOTAL)
        cache = args.workdir / "cache"
        for old in cache.glob("images-*.npy") if cache.exists() else []:
            old.unlink()  # every n decodes its images afresh (and the disk holds one cache at a time)
        argv = ["--child", str(root), "--image-size", str(args.image_size), "--workdir", str(args.workdir)]
        env = {"MALLOC_MMAP_THRESHOLD_": "65536"} if args.malloc == "returned" else {}
        r = run_child("benchmarks.image_memory", argv, f"n={n}", env)
        rows.append(r)
        print(f"n={r['n']:6d}: one array {r['images_array_mb']:5d} MB | own memory peak {r['peak_own_mb']} MB "
              f"(+{r['own_growth_mb']} MB) | peak RSS {r['peak_rss_mb']} MB | load {r['load_s']} s, "
              f"1 epoch + predict {r['train_predict_s']} s", file=sys.stderr)
    print(json.dumps({"image_size": args.image_size, "malloc": args.malloc, "rows": rows}))


if __name__ == "__main__":
    main()
