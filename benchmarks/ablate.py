"""A study run serially (one process, cells one by one, as with the CLI) and on local Ray.

    python -m benchmarks.ablate [--study studies/d3m.toml] [--seeds N] [--epochs E] [--workers 2] [--threads 1]
    python -m benchmarks.ablate --pipeline      # the sample pipeline, ensemble members serial vs on Ray

Serially: every task through start_analysis / start_debias in this process, with `--threads`
torch threads (1 = the same numerics as a Ray task, so the tables can be compared exactly).
On Ray: the same study with `d3m ablate`'s runner on a local Ray of `--workers` CPUs, Ray's
start-up included. Both use fresh temporary work directories, so nothing is reused. The last
JSON lines: serial_s, ray_s, ratio (ray / serial; goal <= 0.60 on 2 cores), cells, tasks,
identical (every result column of the two tables equal; times excluded); then each cell's
task figures (CPU and wall seconds of its analysis and method tasks), which
benchmarks/cluster_schedule.py turns into a cluster's schedule on paper.

With --pipeline: analysis + D3M + random control on the sample with default settings, once
with the ensemble members trained one after the other (torch's default threads) and once with
them as Ray tasks (Ray's start-up included); JSON: members_serial_s, members_ray_s.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from core.pipeline.analysis import TARGET as ANALYSIS_TARGET, start_analysis
from core.config import analysis_config
from core.pipeline.debias import start_debias
from core.runs.store import RunStore
from core.studies import table as tables
from core.studies.grid import cells, tasks
from core.studies.spec import Study, load_study
from core.studies.study_runs import start_study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ("test_wga", "test_acc", "test_balanced_acc", "test_macro_f1", "val_wga", "n_removed")


def serial(study: Study, store: RunStore, threads: int) -> pd.DataFrame:
    """The study's table from its tasks run one by one in this process."""
    torch.set_num_threads(threads)
    records = []
    for task in tasks(study):
        analysis = start_analysis(store, task.analysis_config(), inline=True)  # shared configs reused
        run = start_debias(store, analysis.id, task.cell.method, task.params(), control=study.control, inline=True)
        records.append({"cell": task.cell.label, "method": task.cell.method, "seed": task.seed, "state": "done",
                        "analysis": analysis.id, "run": run.id})
    return tables.study_table(tables.task_rows(store, records), study.metrics)


def on_ray(study: Study, store: RunStore, workers: int, members: str = "auto") -> tuple[pd.DataFrame, list[dict]]:
    """The study's table on a local Ray, and each cell's task figures (benchmarks/cluster_schedule.py)."""
    run = start_study(store, study, num_cpus=workers, inline=True, members=members)
    return tables.read(run), per_task(store, run.read_json("cells"))


def per_task(store: RunStore, cells: list[dict]) -> list[dict]:
    """Per cell: its analysis's and its method task's CPU and wall seconds (resources.json)."""
    out = []
    for cell in cells:
        run = store.get(cell["run"])
        analysis = store.get(run.parent).read_json("resources")
        method = run.read_json("resources")
        out.append({"cell": cell["cell"], "analysis": run.parent, "analysis_cpu_s": round(analysis["cpu_s"], 1),
                    "analysis_wall_s": round(analysis["wall_s"], 1), "method_cpu_s": round(method["cpu_s"], 1),
                    "method_wall_s": round(method["wall_s"], 1)})
    return out


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    columns = [f"{m}_{s}" for m in RESULTS for s in ("mean", "std") if f"{m}_mean" in a.columns]
    columns += [c for c in a.columns if c.startswith("info.") and "second" not in c and "_s_" not in c]
    a, b = a.set_index("cell"), b.set_index("cell")
    return list(a.index) == list(b.index) and a[columns].round(9).equals(b[columns].round(9))


def pipeline(store: RunStore, target: str) -> float:
    start = time.perf_counter()
    analysis = start_analysis(store, analysis_config(), reuse=False, inline=True, target=target)
    start_debias(store, analysis.id, "d3m", {"seed": 0}, control=True, inline=True)
    return time.perf_counter() - start


def main_pipeline() -> None:
    from core.studies import members

    with tempfile.TemporaryDirectory() as tmp:
        serial_s = pipeline(RunStore(Path(tmp) / "serial"), ANALYSIS_TARGET)
        ray_s = pipeline(RunStore(Path(tmp) / "ray"), members.TARGET)
    print(f"sample pipeline: members serial {serial_s:.1f} s, members on Ray {ray_s:.1f} s")
    print(json.dumps({"members_serial_s": round(serial_s, 1), "members_ray_s": round(ray_s, 1),
                      "ratio": round(ray_s / serial_s, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "d3m.toml"))
    parser.add_argument("--seeds", type=int, default=None, help="use the study's first N seeds (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the serial run")
    parser.add_argument("--epochs", type=int, default=None, help="override the study's epochs (a shorter run)")
    parser.add_argument("--pipeline", action="store_true", help="time the sample pipeline, members serial vs Ray")
    parser.add_argument("--members", choices=("auto", "serial", "ray"), default="auto",
                        help="the study's ensemble members as Ray tasks (d3m ablate --members)")
    args = parser.parse_args()
    if args.pipeline:
        return main_pipeline()
    study = load_study(args.study)
    if args.seeds:
        study = replace(study, seeds=study.seeds[:args.seeds])
    if args.epochs:
        study = replace(study, analysis={**study.analysis, "epochs": args.epochs})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        table_serial = serial(study, RunStore(Path(tmp) / "serial"), args.threads)
        serial_s = time.perf_counter() - start
        start = time.perf_counter()
        table_ray, figures = on_ray(study, RunStore(Path(tmp) / "ray"), args.workers, args.members)
        ray_s = time.perf_counter() - start
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(tables.formatted(table_ray).to_string(index=False))
    print(f"{study.name}: {len(tasks(study))} tasks; serial ({args.threads} torch thread(s)) {serial_s:.1f} s, "
          f"Ray on {args.workers} workers {ray_s:.1f} s; {platform.machine()}, torch {torch.__version__}")
    print(json.dumps({"study": study.name, "serial_s": round(serial_s, 1), "ray_s": round(ray_s, 1),
                      "ratio": round(ray_s / serial_s, 3), "cells": len(cells(study)), "tasks": len(tasks(study)),
                      "workers": args.workers, "serial_threads": args.threads, "epochs": args.epochs,
                      "members": args.members, "identical": same_results(table_serial, table_ray)}))
    print(json.dumps({"per_task": figures}))


if __name__ == "__main__":
    main()
