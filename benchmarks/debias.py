"""Debiasing on the built-in sample with default settings: stage times and WGA over seeds.

    python -m benchmarks.debias [--data DIR] [--workdir DIR] [--seeds 0 1 2] [--epochs E] [--models T]
                                [--scope S] [--projector P]

Prints the time of each stage, TRAK featurization per model as a ratio to one training
epoch, the whole pipeline's time (analysis + D3M retrain + random control, first seed), and
mean ± std of test worst-group accuracy for ERM, D3M, Auto-D3M and random removal. The last
line is one JSON object. Runs go to the work directory (a fresh temporary one by default), so
nothing is reused from earlier runs and the times are honest.

A method that fails in a seed (or a seed whose analysis fails) does not stop the others: its
value is missing, the reason is printed and kept under "failed" in the JSON, and the exit
status is 1.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from benchmarks.failures import one_line
from core.pipeline.analysis import start_analysis
from core.config import DEFAULT_DATA, AnalysisConfig, analysis_config
from core.pipeline.debias import start_debias
from core.runs.store import RunStore
from core.views.summary import control_of


METHODS = ("d3m", "auto_d3m")  # each seed: D3M with its random control, then Auto-D3M
VALUES = ("erm", "d3m", "auto_d3m", "random")


def one_seed(store: RunStore, cfg: AnalysisConfig, seed: int) -> dict:
    """Test WGA of each value (None where it failed; the reasons under "failed"), stage times."""
    cfg = replace(cfg, train=replace(cfg.train, seed=seed))
    out: dict = {"failed": {}}
    start = time.perf_counter()
    try:
        analysis = start_analysis(store, cfg, reuse=False, inline=True)
    except Exception as exc:  # noqa: BLE001  (a failed seed is reported, the others still run)
        out["failed"] = {v: f"analysis: {one_line(exc)}" for v in VALUES}
        return out
    t_analysis = time.perf_counter() - start
    metrics = analysis.read_json("metrics")
    out.update(erm=metrics["test"]["wga"], timings=metrics["timings"], epoch_seconds=metrics["epoch_seconds"])
    for method in METHODS:
        t0 = time.perf_counter()
        try:
            run = start_debias(store, analysis.id, method, {"seed": seed}, control=(method == "d3m"), inline=True)
        except Exception as exc:  # noqa: BLE001
            lost = (method, "random") if method == "d3m" else (method,)  # the control runs inside D3M's run
            out["failed"].update(dict.fromkeys(lost, one_line(exc)))
            continue
        out[method] = run.read_json("metrics")["test"]["wga"]
        out[f"{method}_removed"] = run.read_json("metrics")["n_removed"]
        if method == "d3m":
            out["random"] = control_of(store, run).read_json("metrics")["test"]["wga"]
            out["pipeline_seconds"] = t_analysis + time.perf_counter() - t0
    return out


def summarise(results: list[dict]) -> dict:
    """Mean ± sample std of test WGA per value over the seeds where it ran; "failed" lists the
    values that failed in some seed with the first reason."""
    summary: dict = {}
    failed = {}
    for value in VALUES:
        got = np.array([r[value] for r in results if r.get(value) is not None], dtype=float)
        reasons = [r["failed"][value] for r in results if value in r["failed"]]
        if reasons:
            failed[value] = reasons[0]
        if len(got):
            std = float(got.std(ddof=1)) if len(got) > 1 else 0.0  # sample std over seeds, as table1.py
            summary[value] = {"wga_mean": round(float(got.mean()), 4), "wga_std": round(std, 4), "seeds": len(got)}
        else:
            summary[value] = None
    summary["failed"] = failed
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--scope", default=None, help="gradient scope (default: TrakConfig's)")
    parser.add_argument("--projector", default=None, help="projector (default: TrakConfig's)")
    args = parser.parse_args(argv)
    cfg = analysis_config(args.data, epochs=args.epochs, n_models=args.models, scope=args.scope,
                          projector=args.projector)
    store = RunStore(args.workdir or tempfile.mkdtemp(prefix="d3m-bench-"))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}; workdir {store.workdir}")
    results = []
    for seed in args.seeds:
        r = one_seed(store, cfg, seed)
        results.append(r)
        shown = "  ".join(f"{v} " + (f"{r[v]:.3f}" if r.get(v) is not None else "failed") for v in VALUES)
        print(f"seed {seed}: test WGA  {shown}  (removed: D3M {r.get('d3m_removed')}, "
              f"Auto-D3M {r.get('auto_d3m_removed')})")
        for value, reason in r["failed"].items():
            print(f"seed {seed}: {value} failed: {reason}")
    summary = {}
    first = next((r for r in results if "timings" in r), None)
    if first is not None:
        per_model = first["timings"]["featurize"] / cfg.trak.n_models
        ratio = per_model / first["epoch_seconds"]
        print("stage times (first seed): " + ", ".join(f"{k} {v:.1f}s" for k, v in first["timings"].items()))
        print(f"one training epoch {first['epoch_seconds']:.2f}s; TRAK per model {per_model:.2f}s = {ratio:.2f} epochs")
        summary["featurize_epoch_ratio"] = round(ratio, 3)
        if "pipeline_seconds" in first:
            print(f"pipeline (analysis + D3M retrain + random control): {first['pipeline_seconds']:.1f}s")
            summary["pipeline_seconds"] = round(first["pipeline_seconds"], 1)
    summary.update(summarise(results))
    for value in VALUES:
        row = summary[value]
        print(f"{value:>9}: " + (f"test WGA {100 * row['wga_mean']:.1f} ± {100 * row['wga_std']:.1f}" if row else "failed")
              + (f"  (failed: {summary['failed'][value]})" if value in summary["failed"] else ""))
    print(json.dumps(summary))
    return int(bool(summary["failed"]))


if __name__ == "__main__":
    sys.exit(main())
