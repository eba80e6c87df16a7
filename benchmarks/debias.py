"""Debiasing on the built-in sample with default settings: stage times and WGA over seeds.

    python -m benchmarks.debias [--data DIR] [--workdir DIR] [--seeds 0 1 2] [--epochs E] [--models T]
                                [--scope S] [--projector P]

Prints the time of each stage, TRAK featurization per model as a ratio to one training
epoch, the whole pipeline's time (analysis + D3M retrain + random control, first seed), and
mean ± std of test worst-group accuracy for ERM, D3M, Auto-D3M and random removal. The last
line is one JSON object. Runs go to the work directory (a fresh temporary one by default), so
nothing is reused from earlier runs and the times are honest.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from core.analysis import start_analysis
from core.config import DEFAULT_DATA, AnalysisConfig, analysis_config
from core.debias import start_debias
from core.runs import RunStore
from core.summary import control_of


def one_seed(store: RunStore, cfg: AnalysisConfig, seed: int) -> dict:
    cfg = replace(cfg, train=replace(cfg.train, seed=seed))
    start = time.perf_counter()
    analysis = start_analysis(store, cfg, reuse=False, inline=True)
    t_analysis = time.perf_counter() - start
    out = {"erm": analysis.read_json("metrics")["test"]["wga"], "timings": analysis.read_json("metrics")["timings"],
           "epoch_seconds": analysis.read_json("metrics")["epoch_seconds"]}
    for method in ("d3m", "auto_d3m"):
        t0 = time.perf_counter()
        run = start_debias(store, analysis.id, method, {"seed": seed}, control=(method == "d3m"), inline=True)
        out[method] = run.read_json("metrics")["test"]["wga"]
        out[f"{method}_removed"] = run.read_json("metrics")["n_removed"]
        if method == "d3m":
            out["random"] = control_of(store, run).read_json("metrics")["test"]["wga"]
            out["pipeline_seconds"] = t_analysis + time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--scope", default=None, help="gradient scope (default: TrakConfig's)")
    parser.add_argument("--projector", default=None, help="projector (default: TrakConfig's)")
    args = parser.parse_args()
    cfg = analysis_config(args.data, epochs=args.epochs, n_models=args.models, scope=args.scope,
                          projector=args.projector)
    store = RunStore(args.workdir or tempfile.mkdtemp(prefix="d3m-bench-"))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}; workdir {store.workdir}")
    results = []
    for seed in args.seeds:
        r = one_seed(store, cfg, seed)
        results.append(r)
        print(f"seed {seed}: test WGA  ERM {r['erm']:.3f}  D3M {r['d3m']:.3f} (removed {r['d3m_removed']})  "
              f"Auto-D3M {r['auto_d3m']:.3f} (removed {r['auto_d3m_removed']})  random {r['random']:.3f}")
    first = results[0]
    per_model = first["timings"]["featurize"] / cfg.trak.n_models
    ratio = per_model / first["epoch_seconds"]
    print("stage times (seed 0): " + ", ".join(f"{k} {v:.1f}s" for k, v in first["timings"].items()))
    print(f"one training epoch {first['epoch_seconds']:.2f}s; TRAK per model {per_model:.2f}s = {ratio:.2f} epochs")
    print(f"pipeline (analysis + D3M retrain + random control): {first['pipeline_seconds']:.1f}s")
    summary = {"featurize_epoch_ratio": round(ratio, 3), "pipeline_seconds": round(first["pipeline_seconds"], 1)}
    for method in ("erm", "d3m", "auto_d3m", "random"):
        values = np.array([r[method] for r in results])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0  # sample std over seeds, as table1.py
        summary[method] = {"wga_mean": round(float(values.mean()), 4), "wga_std": round(std, 4)}
        print(f"{method:>9}: test WGA {100 * values.mean():.1f} ± {100 * std:.1f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
