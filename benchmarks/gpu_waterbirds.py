"""The Waterbirds recipe on one GPU: a prepared run for a machine with CUDA (not run on the CPU
machine this project is developed on; BENCHMARKS.md says when it was run).

    python -m benchmarks.gpu_waterbirds [--data TABLE] [--arch resnet50] [--weights imagenet|FILE]
                                        [--epochs 2] [--models 2] [--workdir DIR]

Without --data, the built-in sample in Waterbirds format (benchmarks.archs); with a real
Waterbirds download, its imported table (`d3m import waterbirds`). The analysis runs in this
process with `--recipe paper-waterbirds` (Adam, lr 1e-4, wd 1e-4, batch 32, crop + flip) at
224 px for `--epochs` epochs (the paper: 20) and T = `--models` members, bfloat16 autocast and
pinned-memory batches, then D3M retrains once. Printed: the ERM time per epoch, the attribution
time (members trained, featurized, scored) per member in ERM epochs, the retrain time, the peak
GPU memory (torch.cuda.max_memory_allocated) and peak RSS; the last line is one JSON object.
The weights default to random init: a machine without internet cannot fetch ImageNet's (pass
the file by path). Expected cost of the full recipe (20 epochs, T = 5, 4,795 training images) is
these figures scaled by epochs x (1 + T/2 + 1).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.archs import waterbirds_sample
from benchmarks.measure import peak_mb
from core.config import analysis_config
from core.pipeline.analysis import start_analysis
from core.pipeline.debias import start_debias
from core.runs.store import RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("workdir/bench_gpu"))
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script (use a small --image-size)")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark is for a machine with one (--device cpu: a dry run)")
    table = args.data or str(waterbirds_sample(args.workdir / "waterbirds_sample"))
    cfg = analysis_config(table, arch=args.arch, weights=args.weights, image_size=args.image_size,
                          recipe="paper-waterbirds", epochs=args.epochs, n_models=args.models, device=args.device)
    store = RunStore(args.workdir)
    start = time.perf_counter()
    analysis = start_analysis(store, cfg, reuse=False, inline=True)
    analysis_s = time.perf_counter() - start
    metrics = analysis.read_json("metrics")
    start = time.perf_counter()
    start_debias(store, analysis.id, "d3m", {"seed": 0}, control=False, inline=True)
    retrain_s = time.perf_counter() - start
    epoch_s = metrics["epoch_seconds"]
    members_s = analysis_s - metrics["timings"]["erm_train"]
    out = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "arch": args.arch, "weights": args.weights,
           "image_size": args.image_size, "train": len(analysis.read_array("train_ids")), "epochs": args.epochs, "models": args.models,
           "erm_epoch_s": round(epoch_s, 1), "analysis_s": round(analysis_s, 1),
           "attribution_epochs_per_member": round(members_s / args.models / epoch_s, 2),
           "retrain_s": round(retrain_s, 1), "erm_test_wga": metrics["test"]["wga"],
           "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if gpu else None,
           "peak_rss_mb": round(peak_mb())}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
