"""Attribution cost and fidelity: our projectors and gradient scopes against the peers, on the same models.

    .venv/bin/python -m benchmarks.attribution [--scale S | --train N] [--models T] [--lds-models N] [--quick]
                                                [--targets M] [--variants ...] [--variant-timeout S] [--resume]
                                                [--follow-up SUMMARY] [--downstream] [--scaling 5000 20000 ...]

Trains T ensemble members (random 50% subsets, the analysis job's recipe and seeds) once
(cached in --workdir), then, in a fresh subprocess per variant and member (so each peak RSS is
its own), computes the member's TRAK scores (val x train) and times featurization + scoring
against one training epoch (a fresh model trained 3 epochs on the full train split in its own
subprocess, before and after the variants; the unit is the mean of its warm epochs 2-3, the
first paying one-off warm-up; wall and CPU time both reported, as the CPU may be shared).
Peers (benchmarks/peers.py, extras '.[bench]'): traker 0.3.2 runs TRAKer with its CPU default
(BasicProjector, dense normal projection; float32) on the same checkpoints and projection
dimension, with our ridge ("traker/lambda0" keeps its default 0); kronfluence 1.0.1 (EK-FAC
influence functions, all Linear/Conv2d layers) and dattri 0.3.0 (TRAKAttributor, all
parameters, the same k) as their documentation says. With no --variants: our default and every
peer. --variant-timeout bounds a variant's time (all members): one stopped there keeps a row
with the members it finished (its LDS at that T, marked partial) or, with none, the reason.
--resume reads back members an earlier run of the same spec finished (member_<t>.json).
Fidelity: LDS against N models trained on held-out random 50% subsets (benchmarks/lds.py),
at T = 1 and T = all members; Pearson correlation of the T-averaged scores with traker's.
--train N: the sample's generator at N train examples (scale N/3000). --targets M: the first M
val examples are the targets (val cycles over the groups, so any prefix is balanced).
--follow-up SUMMARY (the summary_n<N>.json an earlier run saved): our default, our best option
and the best peer of that run, 4 LDS models unless told; a peer that finishes no member gets its
time extrapolated linearly in n from that run (same targets), labelled so (the 80k mode).
--downstream, --scaling: benchmarks/attribution_scaling.py.
The last line printed is one JSON object (also saved as summary_n<N>.json in --workdir).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.fidelity import (extrapolated, follow_up_variants, member_record, member_scores, save_member_record,
                                 summarize)
from benchmarks.lds import subset_margins
from benchmarks.measure import data_root, peak_mb, rss_mb, train_members, warm_epoch
from benchmarks.peers import PEERS
from core.attribution.gradients import resolve_scope
from core.attribution.lds import lds
from core.attribution.trak import model_scores
from core.config import AnalysisConfig, DataConfig, TrainConfig, TrakConfig, to_dict
from core.data.dataset import load_dataset
from core.train.checkpoints import load_checkpoint

SAMPLE_TRAIN = 3000  # train examples in the built-in sample at scale 1
VARIANTS = {  # name: TrakConfig overrides (each names its projector and scope); "traker" is the baseline
    "factored/auto": {"projector": "factored", "scope": "auto"},
    "factored/all": {"projector": "factored", "scope": "all"},
    "factored/last:2": {"projector": "factored", "scope": "last:2"},
    "factored/last:3": {"projector": "factored", "scope": "last:3"},
    "factored/last": {"projector": "factored", "scope": "last"},
    "sparse/all": {"projector": "sparse", "scope": "all"}, "sparse/last:2": {"projector": "sparse", "scope": "last:2"},
    "dense/all": {"projector": "dense", "scope": "all"}, "dense/last": {"projector": "dense", "scope": "last"},
    "factored/all/proxy2": {"projector": "factored", "scope": "all", "proxy_width": 2},
    "factored/last/proxy2": {"projector": "factored", "scope": "last", "proxy_width": 2},
    "factored/last/proxy4": {"projector": "factored", "scope": "last", "proxy_width": 4},
    "traker": {"projector": "traker"},
    "traker/lambda0": {"projector": "traker", "ridge": 0.0},
    "kronfluence": {"projector": "kronfluence"},
    "dattri": {"projector": "dattri"},
}
DEFAULT_RUN = [f"{TrakConfig().projector}/{TrakConfig().scope}", *PEERS]  # no --variants: ours and every peer
QUICK = ["factored/last", "factored/all", "sparse/all", "dense/all", "traker"]


def base_config(args: argparse.Namespace, root: str) -> AnalysisConfig:
    return AnalysisConfig(data=DataConfig(root), train=replace(TrainConfig(), epochs=args.epochs, device="cpu"),
                          trak=TrakConfig(n_models=args.models, proj_dim=args.proj_dim))


def epoch_time(root: str, workdir: Path) -> dict:
    """Wall and CPU seconds of one training epoch over the full train split (fresh process)."""
    spec = {"name": "epoch", "root": root, "workdir": str(workdir), "epoch_only": True,
            "out": str(workdir / "scores" / "epoch")}
    return in_subprocess(spec)["epoch"]


def worker(spec: dict) -> dict:
    """One member of one variant in this (fresh) process: its scores (scores_<t>.npy), seconds, peak RSS.
    Without a checkpoint: a fresh model trained on the full train split, whose warm epoch is the unit."""
    torch.manual_seed(0)
    data = load_dataset(DataConfig(spec["root"]), cache_dir=Path(spec["workdir"]) / "cache")
    train_idx, val_idx = data.idx("train"), data.idx("val")[:spec.get("targets")]
    if spec.get("checkpoint"):
        model, epoch, t = load_checkpoint(spec["checkpoint"]), None, spec["member"]
    else:
        models, epoch = warm_epoch(data, train_idx, spec["root"])
        if spec.get("epoch_only"):
            return {"epoch": epoch}
        model, t = models[0], 0
    base = rss_mb()
    out = np.lib.format.open_memmap(Path(spec["out"]) / f"scores_{t}.npy", mode="w+", dtype=np.float32,
                                    shape=(len(val_idx), len(train_idx)))
    start, cpu0 = time.perf_counter(), time.process_time()
    if spec["trak"]["projector"] in PEERS:
        PEERS[spec["trak"]["projector"]](model, data, train_idx, val_idx, spec, t, out)
    else:
        shutil.rmtree(Path(spec["out"]) / f"features_{t}", ignore_errors=True)  # time a fresh store
        model_scores(model, data.images, data.labels, train_idx, val_idx, TrakConfig(**spec["trak"]), 1000 + t + 1,
                     torch.device("cpu"), Path(spec["out"]) / f"features_{t}", out)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    out.flush()
    del out
    return {"seconds": [seconds], "cpu_seconds": [cpu], "peak_mb": peak_mb(), "baseline_mb": base, "epoch": epoch}


def run_variant(spec: dict, checkpoints: list[str], timeout: float | None, resume: bool) -> dict:
    """Every member of one variant, each in a fresh process; with `resume`, a member whose record
    says it was made by the same spec is read back. Stops when the members' time passes `timeout`
    (seconds of the variant, all members): the result then has the members finished and `partial`
    says why; RuntimeError when not even the first member finished."""
    res, spent, why = None, 0.0, None
    for t, path in enumerate(checkpoints):
        member = {**spec, "member": t, "checkpoint": path}
        got = member_record(Path(spec["out"]), t, member) if resume else None
        if got is None and timeout is not None and spent >= timeout:
            why = f"{t} of {len(checkpoints)} members done: their {spent:.0f} s used up the {timeout:.0f} s timeout"
            break
        if got is None:
            try:
                start = time.perf_counter()
                got = in_subprocess(member, None if timeout is None else timeout - spent)
            except RuntimeError as exc:
                why = f"{t} of {len(checkpoints)} members done: {str(exc).strip().splitlines()[-1][:300]}"
                break
            save_member_record(Path(spec["out"]), t, member, got | {"wall": time.perf_counter() - start})
        spent += got["seconds"][0]
        res = got if res is None else {**res, "seconds": res["seconds"] + got["seconds"],
                                       "cpu_seconds": res["cpu_seconds"] + got["cpu_seconds"],
                                       "peak_mb": max(res["peak_mb"], got["peak_mb"])}
    if res is None:
        raise RuntimeError(why)
    return res | {"partial": why}


def in_subprocess(spec: dict, timeout: float | None = None) -> dict:
    """Run `worker(spec)` in a fresh interpreter; its last stdout line is the JSON result.
    Raises RuntimeError (its last line says why) when it fails, is killed or runs past `timeout`."""
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.attribution", "--worker", json.dumps(spec)],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=timeout)
    except subprocess.TimeoutExpired:  # run() has killed and reaped it: its CPU time is in RUSAGE_CHILDREN
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        raise RuntimeError(f"worker {spec['name']}: did not finish within {timeout:.0f} s "
                           f"({used:.0f} s CPU, start-up included)") from None
    if proc.returncode < 0:
        raise RuntimeError(f"worker {spec['name']}:\n{proc.stderr[-3000:]}\nkilled by signal {-proc.returncode}"
                           + (" (out of memory)" if proc.returncode == -9 else ""))
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace, workdir: Path) -> dict:
    """Cost, LDS and agreement of each variant on the same members; prints a table."""
    root = data_root(args.scale, workdir)
    cfg = base_config(args, root)
    data = load_dataset(cfg.data, cache_dir=workdir / "cache")
    n, m = len(data.idx("train")), len(data.idx("val")[:args.targets])
    print(f"data {root}: {n} train, {m} val targets; T = {args.models}, k = {args.proj_dim}, "
          f"{args.epochs} epochs; LDS: {args.lds_models} subset models, mask seed {args.lds_seed}, "
          f"model seeds 10000*{args.lds_seed}+s; torch threads {torch.get_num_threads()}; "
          f"scope auto resolves to {resolve_scope('auto', n)}", flush=True)
    members = {w: [str(p) for p in train_members(cfg, data, workdir, w)]
               for w in sorted({VARIANTS[v].get("proxy_width", 1) for v in args.variants})}
    truth = None
    if args.lds_models:  # 0: scores and costs only (e.g. peers computed beside a run that trains the LDS models)
        masks, margins = subset_margins(data, cfg, args.lds_models, args.lds_seed, workdir / "lds")
        truth = masks, margins[:, :m]
    before = epoch_time(root, workdir)
    results, failed = {}, {}
    for name in args.variants:
        trak = {**to_dict(cfg.trak), **VARIANTS[name]}
        trak["scope"] = resolve_scope(trak["scope"], n)  # what "auto" means here (and in a member's record)
        spec = {"name": name, "root": root, "workdir": str(workdir), "trak": trak, "targets": m,
                "out": str(workdir / "scores" / f"n{n}_{name.replace('/', '_').replace(':', '')}")}
        try:
            results[name] = score_variant(spec, members[trak.get("proxy_width", 1)], args, truth)
        except RuntimeError as exc:  # a variant that cannot finish one member keeps its row, with the reason
            failed[name] = str(exc)
            print(f"  {name}: no member finished here: {failed[name]}", flush=True)
    after = epoch_time(root, workdir)  # the CPU is shared: time the unit before and after, use the mean
    epoch = {k: (before[k] + after[k]) / 2 for k in before}
    print(f"one warm training epoch (full train split, {n} examples; mean of epochs 2-3 of a fresh model): "
          f"{epoch['wall']:.2f} s wall "
          f"(before {before['wall']:.2f}, after {after['wall']:.2f}), {epoch['cpu']:.2f} s CPU")
    for name, res in results.items():
        print(f"  {name:20s} {res['per_model_s']:7.2f} s/model = {res['per_model_s'] / epoch['wall']:5.2f} epochs "
              f"(CPU time: {res['per_model_cpu_s'] / epoch['cpu']:5.2f}); "
              f"peak RSS {res['peak_mb']:6.0f} MB (baseline {res['baseline_mb']:.0f}); "
              f"LDS T=1 {_fmt(res['lds_t1'])}, T={res['members']} {_fmt(res['lds_t'])}")
    for name, why in failed.items():
        print(f"  {name:20s} not run: {why}")
    return summarize(results, failed, epoch, args) | {"n_train": n, "targets": m, "auto_scope": resolve_scope("auto", n)}


def score_variant(spec: dict, checkpoints: list[str], args: argparse.Namespace, truth: tuple | None) -> dict:
    """One variant's members (run_variant), their mean scores and LDS at T = 1 and T = members done."""
    res = run_variant(spec, checkpoints, args.variant_timeout, args.resume)
    done = len(res["seconds"])
    first, mean = member_scores(Path(spec["out"]), done)
    res.update(members=done, per_model_s=float(np.mean(res["seconds"])),
               per_model_cpu_s=float(np.mean(res["cpu_seconds"])), mean_scores=mean,
               lds_t1=lds(first, *truth) if truth else None, lds_t=lds(mean, *truth) if truth else None)
    print(f"  {spec['name']}: {res['per_model_s']:.2f} s/model, {done}/{len(checkpoints)} members"
          + (f" (stopped: {res['partial']})" if res["partial"] else ""), flush=True)
    return res


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def follow_up(args: argparse.Namespace, workdir: Path) -> dict:
    """--follow-up SUMMARY: our default and our best option against the best peer of the earlier
    (smaller) run; a peer that does not finish a member gets its time extrapolated from there."""
    earlier = json.loads(Path(args.follow_up).read_text())
    n_new = round(args.scale * SAMPLE_TRAIN) if args.scale else SAMPLE_TRAIN
    resolved = lambda v: {**VARIANTS[v], "scope": resolve_scope(VARIANTS[v].get("scope", ""), n_new)}  # noqa: E731
    picked = follow_up_variants(earlier, DEFAULT_RUN[0])  # the best option may be what the default resolves to
    args.variants = [v for i, v in enumerate(picked) if i == 0 or resolved(v) != resolved(picked[0])]
    print(f"follow-up of {args.follow_up} ({earlier['n_train']} train): {args.variants}", flush=True)
    summary = compare(args, workdir)
    epoch = {"wall": summary["epoch_seconds"], "cpu": summary["epoch_cpu_seconds"]}
    summary["extrapolated"] = {}
    for name in args.variants:
        row = summary["variants"].get(name)
        if name in PEERS and (row is None or row["partial"]):
            est = extrapolated(earlier, name, summary["n_train"], summary["targets"], epoch)
            summary["extrapolated"][name] = est
            if est is not None:
                print(f"  {name:20s} {est['per_model_s']:7.0f} s/model = {est['epoch_ratio']:5.1f} epochs "
                      f"(CPU time: {est['epoch_ratio_cpu']:5.1f}): {est['from']}")
    return summary


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/d3m_bench_attribution"))
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, default=None,
                      help="generated data at this scale, 1 = 3000 train (default: the built-in sample)")
    size.add_argument("--train", type=int, default=None,
                      help="generated data with this many train examples (the sample's generator at scale N/3000)")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--models", type=int, default=5, help="ensemble members T")
    parser.add_argument("--proj-dim", type=int, default=TrakConfig().proj_dim)
    parser.add_argument("--lds-models", type=int, default=None, help="LDS subset models (default 50; 4 with --follow-up)")
    parser.add_argument("--lds-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_RUN,
                        help="default: ours (the TrakConfig default) and every peer; 'ours' in the JSON summary "
                             "is the TrakConfig default if run, else the first")
    parser.add_argument("--variant-timeout", type=float, default=None,
                        help="seconds one variant (all T members) may take; one stopped there keeps a row with the "
                             "members it finished (LDS at that T) or, with none, the reason")
    parser.add_argument("--follow-up", type=Path, default=None, metavar="SUMMARY",
                        help="the summary_n*.json of an earlier run: run our default, our best option and the best "
                             "peer of that run here (e.g. --train 80000), extrapolating a peer that cannot finish")
    parser.add_argument("--resume", action="store_true",
                        help="read back members (scores and costs) an earlier run of the same spec finished")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: T=2, 8 LDS models, {QUICK}")
    parser.add_argument("--downstream", action="store_true")
    parser.add_argument("--scaling", type=int, nargs="*", default=None,
                        help="train sizes, e.g. 5000 20000 80000 160000")
    parser.add_argument("--targets", type=int, default=None,
                        help="val targets: the first N (default: all; 1000 in --scaling)")
    return parser


def main() -> None:
    args = arguments().parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.train is not None:
        args.scale = args.train / SAMPLE_TRAIN
    if args.lds_models is None:
        args.lds_models = 4 if args.follow_up else 50
    if args.quick:
        args.models, args.lds_models = 2, 8
        args.variants = [v for v in args.variants if v in QUICK] if args.variants != DEFAULT_RUN else QUICK
    args.workdir.mkdir(parents=True, exist_ok=True)
    summary = {}
    if args.scaling:
        from benchmarks.attribution_scaling import scaling

        args.targets = args.targets or 1000
        summary["scaling"] = scaling(args, args.workdir)
    else:
        summary = follow_up(args, args.workdir) if args.follow_up else compare(args, args.workdir)
        if args.downstream:
            from benchmarks.attribution_scaling import downstream

            summary["downstream"] = downstream(args, args.workdir)
        path = args.workdir / f"summary_n{summary['n_train']}.json"
        path.write_text(json.dumps(summary, indent=1))
        print(f"summary saved to {path}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
