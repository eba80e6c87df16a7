"""Table 1 protocol: every method on the same analysis (splits, ERM model, scores), several seeds.

    .venv/bin/python -m benchmarks.table1 [--data DIR|TABLE.csv] [--workdir DIR] [--seeds 0,1,2]
        [--methods erm,jtt,...] [--epochs N] [--models T] [--proj-dim K] [--arch ...] [--device ...]

One analysis (ERM + TRAK ensemble) per dataset; then one debias run per (method, seed) with
params {"seed": s} and each method's defaults (D3M/Auto-D3M: k = all negative scores;
re-weighting methods: epoch by validation WGA). Runs live in the run store (--workdir) and a
finished run with the same config is reused, so a second invocation only prints the table.
Prints test worst-group, average and balanced accuracy (mean ± std over seeds, %) and the
examples removed / reweighted, then one last line: a JSON object {method: mean test WGA}.
"reweighted": JTT the upweighted stage-1 errors; RWG the examples whose sampling weight is not
uniform; GroupDRO every example (online group weights); DFR the validation examples its last
layer is fitted on.
Quick smoke run: --seeds 0 --epochs 2 --models 2 --proj-dim 256 --data <a --scale 0.1 copy>.
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from core import jobs
from core.analysis import TARGET as ANALYSIS_TARGET, create_analysis_run
from core.config import DEFAULT_DATA, AnalysisConfig, analysis_config, to_dict
from core.debias import TARGET as DEBIAS_TARGET, create_debias_run
from core.methods import METHODS
from core.runs import Run, RunStore

TABLE1 = ("erm", "auto_d3m", "jtt", "dfr", "d3m", "rwg", "subg", "groupdro")


def analysis_run(store: RunStore, cfg: AnalysisConfig) -> Run:
    run = store.find_done("analysis", to_dict(cfg))
    if run is None:
        run = create_analysis_run(store, cfg)
        print(f"analysis {run.id} ...", file=sys.stderr)
        jobs.run_inline(run, ANALYSIS_TARGET)
    return run


def debias_run(store: RunStore, analysis: Run, method: str, seed: int) -> Run:
    """A finished (reused or new) debias run of `method` with params {"seed": seed}, no control."""
    queued = create_debias_run(store, analysis.id, method, {"seed": seed}, control=False)
    reuse = store.find_done("debias", queued.config(), parent=analysis.id)
    if reuse is not None:
        store.delete(queued.id)
        return reuse
    print(f"{method} seed {seed}: run {queued.id} ...", file=sys.stderr)
    jobs.run_inline(queued, DEBIAS_TARGET)
    return queued


def record(run: Run) -> dict:
    m = run.read_json("metrics")
    info = m.get("info") or {}
    return {"method": m["method"], "title": m["title"], "group_info": m["group_info"], "seed": m["seed"],
            "wga": 100 * m["test"]["wga"], "acc": 100 * m["test"]["acc"],
            "balanced_acc": 100 * m["test"]["balanced_acc"], "removed": m["n_removed"],
            "reweighted": info.get("n_reweighted", info.get("n_val_fit", 0))}


def summarise(records: list[dict]) -> pd.DataFrame:
    """One row per method (first-seen order): mean ± std over seeds of each metric."""
    frame = pd.DataFrame(records)
    rows = []
    for method, runs in frame.groupby("method", sort=False):
        row = {"method": runs["title"].iat[0], "group info": runs["group_info"].iat[0], "seeds": len(runs)}
        for col, name in (("wga", "test WGA"), ("acc", "average acc"), ("balanced_acc", "balanced acc")):
            std = runs[col].std(ddof=1) if len(runs) > 1 else 0.0
            row[name] = f"{runs[col].mean():.1f} ± {std:.1f}"
        row["removed"] = int(round(runs["removed"].mean()))
        row["reweighted"] = int(round(runs["reweighted"].mean()))
        row["_key"], row["_wga"] = method, float(runs["wga"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    base = AnalysisConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset folder, or its metadata table (core/layouts.py)")
    p.add_argument("--workdir", default="workdir-table1")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", default=",".join(TABLE1), help=f"comma-separated (default {','.join(TABLE1)})")
    p.add_argument("--epochs", type=int, default=base.train.epochs)
    p.add_argument("--models", type=int, default=base.trak.n_models, help="TRAK ensemble size T")
    p.add_argument("--proj-dim", type=int, default=base.trak.proj_dim)
    p.add_argument("--arch", default=base.model.arch, choices=["small_cnn", "resnet18"])
    p.add_argument("--weights", default=None, help="local ResNet-18 state_dict (Waterbirds: ImageNet)")
    p.add_argument("--image-size", type=int, default=base.data.image_size)
    p.add_argument("--group-attribute", default=None)
    p.add_argument("--device", default=base.train.device, choices=["auto", "cpu", "cuda"])
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    methods = [m.strip().replace("-", "_") for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}: choose from {', '.join(sorted(METHODS))}")
    cfg = analysis_config(args.data, args.group_attribute, image_size=args.image_size, arch=args.arch,
                          weights=args.weights, epochs=args.epochs, device=args.device, n_models=args.models,
                          proj_dim=args.proj_dim)
    store = RunStore(args.workdir)
    analysis = analysis_run(store, cfg)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = summarise([record(debias_run(store, analysis, m, s)) for m in methods for s in seeds])
    print(f"Table 1 protocol on {cfg.data.root} (analysis {analysis.id}; test split, %, mean ± std over seeds)")
    print(table.drop(columns=["_key", "_wga"]).to_string(index=False))
    result = dict(zip(table["_key"], table["_wga"].round(2)))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
