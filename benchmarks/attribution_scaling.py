"""The --scaling and --downstream modes of benchmarks.attribution: attribution time and peak RSS
as the number of generated train examples grows, and D3M's test WGA with each of our options."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from benchmarks.attribution import SAMPLE_TRAIN, VARIANTS, base_config, in_subprocess
from benchmarks.measure import data_root
from benchmarks.peers import PEERS
from core.config import TrakConfig, to_dict


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
