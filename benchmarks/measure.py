"""What the attribution benchmarks share: memory readings, generated data at a scale, the
ensemble members (cached checkpoints) and the warm-epoch time unit."""
from __future__ import annotations

import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.attribution import proxy_model_config
from core.config import DEFAULT_DATA, AnalysisConfig, DataConfig, TrainConfig
from core.progress import silent
from core.train.checkpoints import save_checkpoint
from core.train.training import fit


def rss_mb() -> float:
    """Current resident set size (MB) from /proc, for the baseline before attribution starts."""
    return status_mb("VmRSS")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def status_mb(field: str) -> float:
    """One memory field of /proc/self/status (VmRSS, RssAnon, RssFile, VmData, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def watch_anon(every_s: float = 0.02) -> list[float]:
    """Start sampling RssAnon (the process's own resident memory, without mapped files such as
    the image cache) on a daemon thread; the returned list's one entry is the peak so far (MB)."""
    import threading

    peak = [0.0]

    def watch() -> None:
        while True:
            peak[0] = max(peak[0], status_mb("RssAnon"))
            time.sleep(every_s)

    threading.Thread(target=watch, daemon=True).start()
    return peak


def run_child(module: str, argv: list[str], what: str, env: dict | None = None) -> dict:
    """`python -m module *argv` in a fresh process (its memory peaks are its own; `env` added to
    its environment); the JSON object on its last stdout line. Exits naming `what` when it fails."""
    import json
    import os
    import subprocess
    import sys

    from core.config import PROJECT_ROOT

    out = subprocess.run([sys.executable, "-m", module, *argv], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})})
    if out.returncode != 0:
        raise SystemExit(f"{what}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def data_root(scale: float | None, workdir: Path) -> str:
    """The built-in sample, or a generated copy at `scale` (cached in the work directory)."""
    if scale is None:
        return DEFAULT_DATA
    root = workdir / f"data_scale{scale:g}"
    if not (root / "metadata.csv").exists():
        from sample_data.make_sample import generate

        generate(root, seed=0, scale=scale)
    return str(root)


def train_members(cfg: AnalysisConfig, data, workdir: Path, proxy_width: int) -> list[Path]:
    """Checkpoints of the T members (analysis.ensemble_scores' subsets and seeds), cached."""
    cfg = replace(cfg, model=proxy_model_config(cfg.model, proxy_width))
    tag = f"{Path(cfg.data.root).name}_w{proxy_width}_e{cfg.train.epochs}"
    train_idx = data.idx("train")
    rng = np.random.default_rng(cfg.train.seed)
    paths = []
    for t in range(cfg.trak.n_models):
        subset = np.sort(rng.choice(len(train_idx), round(cfg.trak.subset_fraction * len(train_idx)), replace=False))
        path = workdir / "models" / f"{tag}_model_{t}.pt"
        if not path.exists():
            member = fit(data, train_idx[subset], cfg, replace(cfg.train, seed=cfg.train.seed * 1000 + t + 1),
                         torch.device("cpu"), silent)
            save_checkpoint(path, member.model, cfg)
        paths.append(path)
    return paths


def warm_epoch(data, train_idx: np.ndarray, root: str, epochs: int = 3) -> tuple[list, dict]:
    """A fresh model trained `epochs` epochs on the full train split, and the wall and CPU
    seconds of one epoch: the mean of epochs 2.. (the first also pays one-off warm-up costs)."""
    cfg = AnalysisConfig(data=DataConfig(root), train=TrainConfig(epochs=epochs, device="cpu"))
    marks = [(time.perf_counter(), time.process_time())]
    trained = fit(data, train_idx, cfg, cfg.train, torch.device("cpu"), silent,
                  on_epoch=lambda *_: marks.append((time.perf_counter(), time.process_time())))
    wall, cpu = ((marks[-1][i] - marks[1][i]) / (len(marks) - 2) for i in (0, 1))
    return [trained.model], {"wall": wall, "cpu": cpu, "first_wall": marks[1][0] - marks[0][0]}
