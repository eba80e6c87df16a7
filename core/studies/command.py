"""`d3m ablate STUDY.toml [--workdir DIR] [--ray ADDRESS] [--cpus N] [--gpus-per-task F] [--members M]
[--node-dir DIR]` and `d3m ablate --plan STUDY.toml`."""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd
from tqdm import tqdm

from core.pipeline.analysis import TARGET
from core.runs.store import Run, RunStore
from core.studies import table as tables
from core.studies.grid import plan
from core.studies.spec import load_study
from core.studies.study_runs import MEMBERS_TARGET, start_study


def analysis_target(members: str) -> str:
    """The analysis job target for `--members serial|ray` (the Ray one lives in core.studies)."""
    return MEMBERS_TARGET if members == "ray" else TARGET


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation study (a TOML file) on Ray; --plan shows its cells first")
    p.add_argument("study", help="the study file, e.g. studies/d3m.toml")
    p.add_argument("--workdir", default="workdir", help="where runs are stored (default: ./workdir)")
    p.add_argument("--plan", action="store_true", help="print the cells and the estimated time; run nothing")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="join this Ray cluster (default: D3M_RAY_ADDRESS, else a local Ray on this machine's cores)")
    p.add_argument("--cpus", type=int, default=None, help="local Ray: number of workers (default: all cores)")
    p.add_argument("--gpus-per-task", type=float, default=None, metavar="F",
                   help="GPUs each task asks for when the cluster has GPUs and the device is auto or cuda "
                        "(default 1; 0.5 puts two tasks on a GPU)")
    p.add_argument("--members", choices=("auto", "serial", "ray"), default="auto",
                   help="an analysis's ensemble members as Ray tasks of their own (auto: when the cluster has "
                        "more task slots than analyses to run)")
    p.add_argument("--node-dir", default=None, metavar="DIR",
                   help="each node's folder for its image cache and task folders, on local disk "
                        "(default: D3M_NODE_DIR on that node, else <tmp>/d3m-node)")
    p.set_defaults(func=cmd_ablate)


def cmd_ablate(args: argparse.Namespace) -> None:
    study = load_study(args.study)
    store = RunStore(args.workdir)
    if args.plan:
        frame, seconds = plan(study, store, workers=args.cpus or os.cpu_count() or 1)
        print(frame.to_string(index=False))
        print(f"{frame['cell'].nunique()} cells x {len(study.seeds)} seeds = {len(frame)} tasks; "
              f"estimated {seconds / 60:.1f} min on {args.cpus or os.cpu_count()} workers "
              "(finished cells in the work directory are reused and cost nothing)")
        return
    bar = tqdm(total=1, desc=study.name, unit="cell", file=sys.stderr, dynamic_ncols=True)

    def report(stage: str, done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.set_description(f"{study.name}: {stage}"[:60])
        bar.refresh()

    try:
        run = start_study(store, study, ray_address=args.ray, num_cpus=args.cpus, inline=True, report=report,
                          node_dir=args.node_dir, gpus_per_task=args.gpus_per_task, members=args.members)
    finally:
        bar.close()
    show(run)


def show(run: Run) -> None:
    """Print the table, where it is on disk, and every failed cell; exit 1 if any failed."""
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(tables.formatted(tables.read(run)).to_string(index=False))
    print(f"table: {run.file('table.csv')} and table.json (study run {run.id})")
    failed = [c for c in run.read_json("cells") if c["state"] != "done"]
    for cell in failed:
        print(f"{cell['state']}: {cell['cell']} seed {cell['seed']}: {cell['error']}", file=sys.stderr)
    if failed:
        raise SystemExit(f"{len(failed)} task(s) did not finish; their tracebacks are in {run.file('cells.json')}")
