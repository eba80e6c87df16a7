"""What holds the peak memory of attribution: RSS over the stages of one model's scores.

    .venv/bin/python -m benchmarks.attribution_memory [--scale 1.667 | --train N] [--scopes last all] [--trim]
                                                       [--models T] [--threads K]

For each scope, in a fresh subprocess: a generated dataset at --scale (1 = the sample's
3,000 train), an untrained model of the default architecture (memory does not depend on the
weights), and `core.attribution.trak.model_scores` (the default factored projector, k and
chunking of TrakConfig) into a (val x train) float32 scores memmap, as the analysis job does.
A thread samples the process's RSS every 20 ms and files each sample under the stage the
reporter last named (train featurization, scoring), so the peak of each stage is its own.
--trim calls glibc's malloc_trim(0) after each stage's report, to tell memory the allocator
keeps from memory that is in use. --models T scores T models in turn in the one process (each
into its own memmap, as benchmarks.attribution's worker does), to see whether the peak grows
from member to member. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.measure import data_root, rss_mb
from core.attribution.trak import model_scores
from core.config import DataConfig, ModelConfig, TrakConfig
from core.data.dataset import load_dataset
from core.train.models import build_model


def worker(spec: dict) -> dict:
    torch.manual_seed(0)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    data = load_dataset(DataConfig(spec["root"]), cache_dir=Path(spec["workdir"]) / "cache")
    train_idx, val_idx = data.idx("train"), data.idx("val")
    model = build_model(ModelConfig(), data.n_classes, data.images.shape[1]).eval()
    stage, peaks, base = ["loaded"], {}, rss_mb()
    libc = ctypes.CDLL("libc.so.6") if spec["trim"] else None

    def sample(stop: threading.Event) -> None:
        while not stop.is_set():
            peaks[stage[0]] = max(peaks.get(stage[0], 0.0), rss_mb())
            time.sleep(0.02)

    def report(name: str, done: int, total: int) -> None:
        """Stages: train featurization, then (once it is complete) factor, targets and scoring."""
        first = name.strip().split(" ")[0]
        stage[0] = "scoring" if first != "train" or done >= total else "train"
        if libc is not None:
            libc.malloc_trim(0)

    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(stop,), daemon=True)
    thread.start()
    member_peaks, seconds = [], []
    with tempfile.TemporaryDirectory(dir=spec["workdir"]) as tmp:
        for t in range(spec["models"]):  # as the benchmark's worker: one scores memmap per member, in turn
            out = np.lib.format.open_memmap(Path(tmp) / f"scores_{t}.npy", mode="w+", dtype=np.float32,
                                            shape=(len(val_idx), len(train_idx)))
            start = time.perf_counter()
            model_scores(model, data.images, data.labels, train_idx, val_idx, TrakConfig(scope=spec["scope"]),
                         1 + t, torch.device("cpu"), Path(tmp) / f"features_{t}", out, report=report)
            seconds.append(time.perf_counter() - start)
            out.flush()
            del out
            stage[0] = "between members"
            member_peaks.append(max(peaks.values()))
        stage[0] = "done"
        time.sleep(0.05)
        stop.set()
        thread.join()
    return {"scope": spec["scope"], "n_train": len(train_idx), "n_val": len(val_idx), "baseline_mb": base,
            "peak_mb": max(peaks.values()), "stage_peaks_mb": peaks, "peak_after_member_mb": member_peaks,
            "seconds": seconds, "scores_mb": len(val_idx) * len(train_idx) * 4 / 2**20, "trim": spec["trim"],
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/d3m_bench_attribution"))
    parser.add_argument("--scale", type=float, default=5000 / 3000)
    parser.add_argument("--scopes", nargs="+", default=["last", "all"])
    parser.add_argument("--trim", action="store_true")
    parser.add_argument("--train", type=int, default=None, help="train examples (sets --scale to N/3000)")
    parser.add_argument("--models", type=int, default=1, help="successive models in one process, as the "
                        "benchmark's worker scores its T members")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.train is not None:
        args.scale = args.train / 3000
    root = data_root(args.scale, args.workdir)
    results = []
    for scope in args.scopes:
        spec = {"root": root, "workdir": str(args.workdir), "scope": scope, "trim": args.trim,
                "models": args.models, "threads": args.threads}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.attribution_memory", "--worker", json.dumps(spec)],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if proc.returncode != 0:
            raise SystemExit(f"scope {scope} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        stages = ", ".join(f"{k} {v - res['baseline_mb']:.0f}" for k, v in res["stage_peaks_mb"].items())
        print(f"scope {scope:5s} n={res['n_train']}: peak {res['peak_mb']:.0f} MB, above the loaded process "
              f"{res['peak_mb'] - res['baseline_mb']:.0f} MB (per stage: {stages}); scores memmap "
              f"{res['scores_mb']:.0f} MB; peak after each member "
              f"{[round(p - res['baseline_mb']) for p in res['peak_after_member_mb']]}; "
              f"{sum(res['seconds']):.1f} s, {res['threads']} thread(s)", flush=True)
    print(json.dumps({"scale": args.scale, "results": results}))


if __name__ == "__main__":
    main()
