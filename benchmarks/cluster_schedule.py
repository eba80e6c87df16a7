"""A study's schedule on a cluster, on paper, from measured per-task figures.

    python -m benchmarks.ablate --seeds 1 --epochs 3 | tail -1 > figures.json
    python -m benchmarks.cluster_schedule figures.json [--n-train 162770] [--epochs 12] [--seeds 3]
        [--workers 4 8 16] [--speedup 1]

Each task's one-core time is its measured CPU seconds (`benchmarks.ablate`'s per_task line: the
analysis and method task of every cell, measured at `--measured-n-train` examples and
`--measured-epochs` epochs) scaled linearly to `--n-train` and `--epochs` (training dominates;
TRAK's val x train scoring grows faster, so this is a lower bound at large n), divided by
`--speedup` for workers faster than one core (a GPU: not measured here, no GPU was available).
The tasks of `--seeds` seeds are then scheduled as `d3m ablate` submits them
(core/studies/runner.longest_first: the longest chain first) on W workers, each taking the first
task whose analysis is done; printed per W: the makespan, the busy share and the critical path
(the longest analysis plus its longest cell, which no number of workers shortens).
"""
from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path


def tasks_of(figures: list[dict], scale: float, seeds: int) -> list[dict]:
    """Analysis and method tasks per seed, each {name, seconds, after}, longest chain first."""
    chains: dict[str, dict] = {}
    for f in figures:
        chain = chains.setdefault(f["analysis"], {"analysis_s": f["analysis_cpu_s"] * scale, "cells": []})
        chain["cells"].append((f["cell"], f["method_cpu_s"] * scale))
    order = sorted(chains.items(), key=lambda kv: -(kv[1]["analysis_s"] + max(s for _, s in kv[1]["cells"])))
    out = []
    for seed in range(seeds):
        for key, chain in order:
            analysis = len(out)
            out.append({"name": f"analysis {key} seed {seed}", "seconds": chain["analysis_s"], "after": None})
            for cell, seconds in sorted(chain["cells"], key=lambda c: -c[1]):
                out.append({"name": f"{cell} seed {seed}", "seconds": seconds, "after": analysis})
    return out


def schedule(tasks: list[dict], workers: int) -> float:
    """Makespan of list scheduling: a free worker takes the first waiting task whose analysis is done."""
    done_at: dict[int, float] = {}
    free = [0.0] * workers
    waiting = list(range(len(tasks)))
    clock = 0.0
    while waiting:
        clock = max(clock, heapq.heappop(free))
        ready = [i for i in waiting if tasks[i]["after"] is None or done_at.get(tasks[i]["after"], 1e300) <= clock]
        if not ready:  # wait for the earliest analysis still running
            clock = min(t for i, t in done_at.items() if t > clock)
            heapq.heappush(free, clock)
            continue
        i = ready[0]
        waiting.remove(i)
        done_at[i] = clock + tasks[i]["seconds"]
        heapq.heappush(free, done_at[i])
    return max(done_at.values())


def critical_path(tasks: list[dict]) -> float:
    longest = {}
    for i, t in enumerate(tasks):
        if t["after"] is not None:
            longest[t["after"]] = max(longest.get(t["after"], 0.0), t["seconds"])
    return max(tasks[a]["seconds"] + s for a, s in longest.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", help="the per_task JSON line of benchmarks.ablate")
    parser.add_argument("--measured-n-train", type=int, default=3000)
    parser.add_argument("--measured-epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=162_770, help="CelebA's training split")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--speedup", type=float, default=1.0, help="a worker's speed in one-core units")
    args = parser.parse_args()
    figures = json.loads(Path(args.figures).read_text())["per_task"]
    scale = args.n_train / args.measured_n_train * args.epochs / args.measured_epochs / args.speedup
    tasks = tasks_of(figures, scale, args.seeds)
    total = sum(t["seconds"] for t in tasks)
    print(f"{len(tasks)} tasks, {total / 3600:.1f} worker-hours, critical path {critical_path(tasks) / 3600:.2f} h")
    rows = []
    for w in args.workers:
        span = schedule(tasks, w)
        rows.append({"workers": w, "hours": round(span / 3600, 2), "busy": round(total / (w * span), 2)})
        print(f"{w:3d} workers: {span / 3600:.2f} h ({total / (w * span):.0%} busy)")
    print(json.dumps({"tasks": len(tasks), "worker_hours": round(total / 3600, 1),
                      "critical_path_h": round(critical_path(tasks) / 3600, 2), "schedule": rows}))


if __name__ == "__main__":
    main()
