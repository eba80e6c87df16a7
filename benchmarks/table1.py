"""Table 1 protocol: every method on the same analysis (splits, ERM model, scores), several seeds.

    .venv/bin/python -m benchmarks.table1 [--data DIR|TABLE.csv] [--workdir DIR] [--seeds 0,1,2]
        [--methods erm,jtt,...] [--epochs N] [--models T] [--proj-dim K] [--device ...]
        [--arch ARCH] [--weights imagenet|FILE] [--recipe NAME] [...the model options of `d3m pipeline`]

One analysis (ERM + TRAK ensemble) per dataset; then one debias run per (method, seed) with
params {"seed": s} and each method's defaults (D3M/Auto-D3M: k = all negative scores;
re-weighting methods: epoch by validation WGA; `random` at the k of D3M's run of the same
seed). Runs live in the run store (--workdir) and a finished run with the same config is reused, so a second invocation only prints the table.
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

from benchmarks.failures import one_line
from core.pipeline.analysis import start_analysis
from core.config import DEFAULT_DATA, AnalysisConfig, analysis_config
from core.pipeline.debias import start_debias
from core.methods import METHODS
from core.runs.store import Run, RunStore
from core.train.command import add_model_opts, model_settings

TABLE1 = ("erm", "auto_d3m", "jtt", "dfr", "d3m", "random", "rwg", "subg", "groupdro", "pgd", "ffw", "ba_lora")


def analysis_run(store: RunStore, cfg: AnalysisConfig) -> Run:
    print("analysis ...", file=sys.stderr)
    return start_analysis(store, cfg, inline=True)


def debias_run(store: RunStore, analysis: Run, method: str, seed: int) -> Run:
    """A finished (reused or new) debias run of `method` with params {"seed": seed}, no control;
    `random` removes as many examples as the D3M run of the same seed (its control)."""
    params = {"seed": seed}
    if method == "random":
        params["k"] = debias_run(store, analysis, "d3m", seed).read_json("metrics")["n_removed"]
    print(f"{method} seed {seed} ...", file=sys.stderr)
    return start_debias(store, analysis.id, method, params, control=False, reuse=True, inline=True)


def record(run: Run) -> dict:
    m = run.read_json("metrics")
    info = m.get("info") or {}
    return {"method": m["method"], "title": m["title"], "group_info": m["group_info"], "seed": m["seed"],
            "wga": 100 * m["test"]["wga"], "acc": 100 * m["test"]["acc"],
            "balanced_acc": 100 * m["test"]["balanced_acc"],
            "macro_f1": 100 * m["test"].get("macro_f1", float("nan")), "removed": m["n_removed"],
            "reweighted": info.get("n_reweighted", info.get("n_val_fit", 0))}


def try_record(store: RunStore, analysis: Run, method: str, seed: int) -> dict:
    """record() of the method's run, or a failed record with the error in one line: one
    failing method must not lose the others' rows."""
    try:
        return record(debias_run(store, analysis, method, seed))
    except Exception as exc:  # noqa: BLE001  (any failure becomes a row)
        reason = one_line(exc)
        print(f"{method} seed {seed} failed: {reason}", file=sys.stderr)
        m = METHODS[method]
        return {"method": method, "title": m.title, "group_info": m.group_info, "seed": seed, "error": reason}


METRICS = (("wga", "test WGA"), ("acc", "average acc"), ("balanced_acc", "balanced acc"), ("macro_f1", "macro-F1"))


def summarise(records: list[dict]) -> pd.DataFrame:
    """One row per method (first-seen order): mean ± std over seeds of each metric; a method
    with a failed seed is a row marked failed with its reason."""
    frame = pd.DataFrame(records)
    if "error" not in frame:
        frame["error"] = None
    rows = []
    for method, runs in frame.groupby("method", sort=False):
        row = {"method": runs["title"].iat[0], "group info": runs["group_info"].iat[0], "seeds": len(runs)}
        failed = runs["error"].dropna()
        if len(failed):
            row.update({name: "failed" for _, name in METRICS}, removed=None, reweighted=None,
                       status=f"failed: {failed.iat[0]}", _key=method, _wga=None)
            rows.append(row)
            continue
        for col, name in METRICS:
            std = runs[col].std(ddof=1) if len(runs) > 1 else 0.0
            row[name] = f"{runs[col].mean():.1f} ± {std:.1f}"
        row["removed"] = int(round(runs["removed"].mean()))
        row["reweighted"] = int(round(runs["reweighted"].mean()))
        row["status"] = "ok"
        row["_key"], row["_wga"] = method, float(runs["wga"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    base = AnalysisConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset folder, or its metadata table (core/data/layouts.py)")
    p.add_argument("--workdir", default="workdir-table1")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", default=",".join(TABLE1), help=f"comma-separated (default {','.join(TABLE1)})")
    p.add_argument("--epochs", type=int, default=None, help=f"default {base.train.epochs} (or the recipe's)")
    p.add_argument("--models", type=int, default=base.trak.n_models, help="TRAK ensemble size T")
    p.add_argument("--proj-dim", type=int, default=base.trak.proj_dim)
    add_model_opts(p)  # --arch (any torchvision classifier), --weights imagenet|FILE, --recipe, ... as in `d3m`
    p.add_argument("--group-attribute", default=None)
    p.add_argument("--device", default=base.train.device, choices=["auto", "cpu", "cuda"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Print and save the table (table1.csv / table1.json in the workdir); the last line is the
    JSON of mean test WGA per method (null for a failed one). Exit status 1 if a row failed."""
    args = build_parser().parse_args(argv)
    methods = [m.strip().replace("-", "_") for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}: choose from {', '.join(sorted(METHODS))}")
    cfg = analysis_config(args.data, args.group_attribute, **model_settings(args), epochs=args.epochs,
                          device=args.device, n_models=args.models, proj_dim=args.proj_dim)
    store = RunStore(args.workdir)
    analysis = analysis_run(store, cfg)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = summarise([try_record(store, analysis, m, s) for m in methods for s in seeds])
    shown = table.drop(columns=["_key", "_wga"])
    shown.to_csv(store.workdir / "table1.csv", index=False)
    (store.workdir / "table1.json").write_text(json.dumps(shown.to_dict(orient="records"), indent=1))
    print(f"Table 1 protocol on {cfg.data.root} (analysis {analysis.id}; test split, %, mean ± std over seeds)")
    print(shown.to_string(index=False))
    result = {k: (None if w is None or w != w else round(w, 2)) for k, w in zip(table["_key"], table["_wga"])}
    print(json.dumps(result))
    return int((table["status"] != "ok").any())


if __name__ == "__main__":
    sys.exit(main())
