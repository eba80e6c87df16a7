"""Attribution cost and fidelity: our projectors and gradient scopes against the peers, on the same models.

    .venv/bin/python -m benchmarks.attribution [--scale S] [--models T] [--lds-models N] [--quick]
                                                [--variants ...] [--downstream] [--scaling 5000 20000 ...]

Trains T ensemble members (random 50% subsets, the analysis job's recipe and seeds) once
(cached in --workdir), then, in a fresh subprocess per variant (so each peak RSS is its own),
computes every member's TRAK scores (val x train) and times featurization + scoring per model
against one training epoch (a fresh model trained 3 epochs on the full train split in its own
subprocess, before and after the variants; the unit is the mean of its warm epochs 2-3, the
first paying one-off warm-up; wall and CPU time both reported, as the CPU may be shared).
Peers (benchmarks/peers.py, extras '.[bench]'): traker 0.3.2 runs TRAKer with its CPU default
(BasicProjector, dense normal projection; float32) on the same checkpoints and projection
dimension, with our ridge ("traker/lambda0" keeps its default 0); kronfluence 1.0.1 (EK-FAC
influence functions, all Linear/Conv2d layers) and dattri 0.3.0 (TRAKAttributor, all
parameters, the same k) as their documentation says. With no --variants: our default and every
peer; a peer that fails or runs past --variant-timeout is reported with the reason.
Fidelity: LDS against N models trained on held-out random 50% subsets (benchmarks/lds.py),
at T = 1 and T = all members; Pearson correlation of the T-averaged scores with traker's.
--downstream: a full analysis + D3M retrain per variant (run store), test WGA.
--scaling: time and peak RSS of attribution (default config, one model, --targets val
examples) as the number of generated train examples grows.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.lds import subset_margins
from benchmarks.measure import data_root, peak_mb, rss_mb, train_members, warm_epoch
from benchmarks.peers import PEERS
from core.attribution.lds import lds
from core.attribution.trak import model_scores
from core.train.checkpoints import load_checkpoint
from core.config import AnalysisConfig, DataConfig, TrainConfig, TrakConfig, to_dict
from core.data.dataset import load_dataset

SAMPLE_TRAIN = 3000  # train examples in the built-in sample at scale 1
VARIANTS = {  # name: TrakConfig overrides (each names its projector and scope); "traker" is the baseline
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
    """One variant in this (fresh) process: scores of every checkpoint, seconds each, peak RSS."""
    torch.manual_seed(0)
    data = load_dataset(DataConfig(spec["root"]), cache_dir=Path(spec["workdir"]) / "cache")
    train_idx, val_idx = data.idx("train"), data.idx("val")[:spec.get("targets")]
    if spec.get("checkpoints"):
        models, epoch = [load_checkpoint(p) for p in spec["checkpoints"]], None
    else:  # train a fresh model on the full train split: the time unit is one warm epoch
        models, epoch = warm_epoch(data, train_idx, spec["root"])
        if spec.get("epoch_only"):
            return {"epoch": epoch}
    base = rss_mb()
    seconds, cpu = [], []
    for t, model in enumerate(models):
        out = np.lib.format.open_memmap(Path(spec["out"]) / f"scores_{t}.npy", mode="w+", dtype=np.float32,
                                        shape=(len(val_idx), len(train_idx)))
        start, cpu0 = time.perf_counter(), time.process_time()
        if spec["trak"]["projector"] in PEERS:
            PEERS[spec["trak"]["projector"]](model, data, train_idx, val_idx, spec, t, out)
        else:
            cfg = TrakConfig(**spec["trak"])
            shutil.rmtree(Path(spec["out"]) / f"features_{t}", ignore_errors=True)  # time a fresh store
            model_scores(model, data.images, data.labels, train_idx, val_idx, cfg, 1000 + t + 1, torch.device("cpu"),
                         Path(spec["out"]) / f"features_{t}", out)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
        out.flush()
        del out
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak_mb(), "baseline_mb": base, "epoch": epoch}


def in_subprocess(spec: dict, timeout: float | None = None) -> dict:
    """Run `worker(spec)` in a fresh interpreter; its last stdout line is the JSON result.
    Raises RuntimeError (its last line says why) when it fails, is killed or runs past `timeout`."""
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.attribution", "--worker", json.dumps(spec)],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"worker {spec['name']}: did not finish within {timeout:.0f} s") from None
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
    n, m = len(data.idx("train")), len(data.idx("val"))
    print(f"data {root}: {n} train, {m} val targets; T = {args.models}, k = {args.proj_dim}, "
          f"{args.epochs} epochs; LDS: {args.lds_models} subset models, mask seed {args.lds_seed}, "
          f"model seeds 10000*{args.lds_seed}+s; torch threads {torch.get_num_threads()}")
    members = {w: train_members(cfg, data, workdir, w) for w in sorted({VARIANTS[v].get("proxy_width", 1)
                                                                         for v in args.variants})}
    masks, margins = subset_margins(data, cfg, args.lds_models, args.lds_seed, workdir / "lds")
    before = epoch_time(root, workdir)
    results, failed = {}, {}
    for name in args.variants:
        trak = {**to_dict(cfg.trak), **VARIANTS[name]}
        spec = {"name": name, "root": root, "workdir": str(workdir), "trak": trak,
                "checkpoints": [str(p) for p in members[trak.get("proxy_width", 1)]],
                "out": str(workdir / "scores" / name.replace("/", "_").replace(":", ""))}
        try:
            res = in_subprocess(spec, args.variant_timeout)
        except RuntimeError as exc:  # a peer that cannot run here keeps its row, with the reason
            failed[name] = str(exc).strip().splitlines()[-1][:300]
            print(f"  {name}: could not run here: {failed[name]}", flush=True)
            continue
        per_model = [np.load(Path(spec["out"]) / f"scores_{t}.npy") for t in range(args.models)]
        mean = np.mean(per_model, axis=0)
        res.update(per_model_s=float(np.mean(res["seconds"])), per_model_cpu_s=float(np.mean(res["cpu_seconds"])),
                   lds_t1=lds(per_model[0], masks, margins),
                   lds_t=lds(mean, masks, margins), mean_scores=mean)
        results[name] = res
        print(f"  {name}: {res['per_model_s']:.2f} s/model", flush=True)
    after = epoch_time(root, workdir)  # the CPU is shared: time the unit before and after, use the mean
    epoch = {k: (before[k] + after[k]) / 2 for k in before}
    print(f"one warm training epoch (full train split, {n} examples; mean of epochs 2-3 of a fresh model): "
          f"{epoch['wall']:.2f} s wall "
          f"(before {before['wall']:.2f}, after {after['wall']:.2f}), {epoch['cpu']:.2f} s CPU")
    for name, res in results.items():
        print(f"  {name:20s} {res['per_model_s']:7.2f} s/model = {res['per_model_s'] / epoch['wall']:5.2f} epochs "
              f"(CPU time: {res['per_model_cpu_s'] / epoch['cpu']:5.2f}); "
              f"peak RSS {res['peak_mb']:6.0f} MB (baseline {res['baseline_mb']:.0f}); "
              f"LDS T=1 {res['lds_t1']:.3f}, T={args.models} {res['lds_t']:.3f}")
    for name, why in failed.items():
        print(f"  {name:20s} not run: {why}")
    return summarize(results, failed, epoch, args)


def corr_with(results: dict, ref: str | None) -> dict:
    """Pearson correlation of each variant's T-averaged scores with those of `ref` (None if not run)."""
    if ref not in results:
        return {name: None for name in results}
    r0 = results[ref]["mean_scores"].ravel()
    return {name: float(np.corrcoef(r["mean_scores"].ravel(), r0)[0, 1]) for name, r in results.items()}


def summarize(results: dict, failed: dict, epoch: dict, args: argparse.Namespace) -> dict:
    """'ours' is the TrakConfig default (projector/scope) when it was run, else the first variant;
    the reference is traker, or our dense reference when traker was not run (then named so)."""
    default = f"{TrakConfig().projector}/{TrakConfig().scope}"
    ours_name = default if default in results else args.variants[0]
    ref_name = next((r for r in ("traker", "dense/all", ours_name) if r in results))
    ours = results[ours_name]
    corr, corr_dense = corr_with(results, ref_name), corr_with(results, "dense/all")
    for name in results:
        print(f"  Pearson corr of {name} scores with {ref_name}: {corr[name]:.3f}"
              + (f", with dense/all: {corr_dense[name]:.3f}" if corr_dense[name] is not None else ""))
    keys = ("per_model_s", "per_model_cpu_s", "peak_mb", "baseline_mb", "lds_t1", "lds_t")
    variants = {name: {k: r[k] for k in keys}
                | {"epoch_ratio": r["per_model_s"] / epoch["wall"],
                   "epoch_ratio_cpu": r["per_model_cpu_s"] / epoch["cpu"],
                   "corr_with_reference": corr[name], "corr_with_dense": corr_dense[name]}
                for name, r in results.items()}
    return {"ours": ours_name, "reference": ref_name if ref_name == "traker" else f"{ref_name} (traker not run)",
            "models": args.models, "proj_dim": args.proj_dim, "lds_models": args.lds_models,
            "lds_seed": args.lds_seed, "epoch_seconds": epoch["wall"],
            "featurize_epoch_ratio": ours["per_model_s"] / epoch["wall"],
            "featurize_epoch_ratio_cpu": ours["per_model_cpu_s"] / epoch["cpu"],
            "lds_ours": ours["lds_t"], "lds_ours_t1": ours["lds_t1"], "peak_mem_mb_ours": ours["peak_mb"],
            "variants": variants,
            "failed": failed} | peer_keys(results, failed, ours_name)


def peer_keys(results: dict, failed: dict, ours_name: str) -> dict:
    """Per peer that was asked for: lds_<peer> (T = all, and _t1), speedup_vs_<peer> (wall and
    CPU), corr_with_<peer>, peak_mem_mb_<peer>; a peer that could not run has None and <peer>_error."""
    out, ours = {}, results[ours_name]
    for peer in PEERS:
        if peer in failed:
            out |= {f"lds_{peer}": None, f"speedup_vs_{peer}": None, f"{peer}_error": failed[peer]}
        elif peer in results:
            r = results[peer]
            out |= {f"lds_{peer}": r["lds_t"], f"lds_{peer}_t1": r["lds_t1"],
                    f"speedup_vs_{peer}": r["per_model_s"] / ours["per_model_s"],
                    f"speedup_vs_{peer}_cpu": r["per_model_cpu_s"] / ours["per_model_cpu_s"],
                    f"corr_with_{peer}": corr_with(results, peer)[ours_name], f"peak_mem_mb_{peer}": r["peak_mb"]}
    return out


def downstream(args: argparse.Namespace, workdir: Path) -> dict:
    """Test WGA of D3M on the sample with each of our variants (analysis + D3M retrain, run store)."""
    from core.pipeline.analysis import start_analysis
    from core.pipeline.debias import start_debias
    from core.runs.store import RunStore

    store = RunStore(workdir / "store")
    cfg = base_config(args, data_root(args.scale, workdir))
    out = {}
    for name in [v for v in args.variants if VARIANTS[v]["projector"] not in PEERS]:
        run = start_analysis(store, replace(cfg, trak=replace(cfg.trak, **VARIANTS[name])), reuse=False, inline=True)
        debias = start_debias(store, run.id, "d3m", {"seed": cfg.train.seed}, control=False, inline=True)
        out[name] = {"erm_test_wga": run.read_json("metrics")["test"]["wga"],
                     "d3m_test_wga": debias.read_json("metrics")["test"]["wga"]}
        print(f"  downstream {name:20s} ERM test WGA {out[name]['erm_test_wga']:.3f} -> "
              f"D3M {out[name]['d3m_test_wga']:.3f}")
    return out


def scaling(args: argparse.Namespace, workdir: Path) -> dict:
    """Attribution time and peak RSS (default TrakConfig, one model) as n train grows."""
    out = {}
    for n in args.scaling:
        root = data_root(n / SAMPLE_TRAIN, workdir)
        spec = {"name": f"scale {n}", "root": root, "workdir": str(workdir), "targets": args.targets,
                "trak": to_dict(TrakConfig(proj_dim=args.proj_dim)),
                "out": str(workdir / "scaling" / str(n))}
        res = in_subprocess(spec)
        s = res["seconds"][0]
        out[n] = {"seconds": s, "cpu_seconds": res["cpu_seconds"][0], "epoch": res["epoch"],
                  "peak_mb": res["peak_mb"], "baseline_mb": res["baseline_mb"]}
        print(f"  n={n:7d}: attribution {s:7.1f} s/model ({s / res['epoch']['wall']:.2f} epochs; CPU time "
              f"{res['cpu_seconds'][0] / res['epoch']['cpu']:.2f}), "
              f"x5 models {5 * s / 60:.1f} min; peak RSS {res['peak_mb']:.0f} MB (baseline {res['baseline_mb']:.0f})")
    if len(out) >= 2:
        (n0, r0), (n1, r1) = list(out.items())[0], list(out.items())[-1]
        rate = (r1["seconds"] - r0["seconds"]) / (n1 - n0)
        est = r1["seconds"] + rate * (160_000 - n1)
        print(f"  linear extrapolation to n=160000, {args.targets} targets: {est:.0f} s/model, "
              f"T=5: {5 * est / 60:.1f} min")
        out["extrapolated_160k_T5_minutes"] = 5 * est / 60
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/d3m_bench_attribution"))
    parser.add_argument("--scale", type=float, default=None,
                        help="generated data at this scale, 1 = 3000 train (default: the built-in sample)")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--models", type=int, default=5, help="ensemble members T")
    parser.add_argument("--proj-dim", type=int, default=TrakConfig().proj_dim)
    parser.add_argument("--lds-models", type=int, default=50)
    parser.add_argument("--lds-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_RUN,
                        help="default: ours (the TrakConfig default) and every peer; 'ours' in the JSON summary "
                             "is the TrakConfig default if run, else the first")
    parser.add_argument("--variant-timeout", type=float, default=None,
                        help="seconds one variant (all T members) may take; one that runs longer is reported as "
                             "not run here")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: T=2, 8 LDS models, {QUICK}")
    parser.add_argument("--downstream", action="store_true")
    parser.add_argument("--scaling", type=int, nargs="*", default=None,
                        help="train sizes, e.g. 5000 20000 80000 160000")
    parser.add_argument("--targets", type=int, default=1000, help="val targets in --scaling")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.models, args.lds_models = 2, 8
        args.variants = [v for v in args.variants if v in QUICK] if args.variants != DEFAULT_RUN else QUICK
    args.workdir.mkdir(parents=True, exist_ok=True)
    summary = {}
    if args.scaling:
        summary["scaling"] = scaling(args, args.workdir)
    else:
        summary = compare(args, args.workdir)
        if args.downstream:
            summary["downstream"] = downstream(args, args.workdir)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
