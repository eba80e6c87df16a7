"""A study's table: per cell, mean and sample std over seeds of every metric, read from the store.

Per task (cell x seed) the numbers come from its debias run: metrics.json (test WGA, average,
balanced accuracy, macro-F1, val WGA, examples removed, the method's seconds, and every number
in the method's `info`, e.g. its own cost figures, as info.NAME) and resources.json (wall time,
CPU time and peak memory of the worker's task), plus the wall time of the analysis it used.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.io import write_csv_atomic
from core.runs.store import Run, RunStore

ACCURACIES = ("test_wga", "test_acc", "test_balanced_acc", "test_macro_f1", "val_wga")


def _resources(run: Run) -> dict:
    return run.read_json("resources") if run.has("resources.json") else {}


def metrics_of(store: RunStore, run_id: str) -> dict:
    """The numbers of one finished debias run (and of the analysis it used)."""
    run = store.get(run_id)
    m = run.read_json("metrics")
    used = _resources(run)
    analysis = _resources(store.get(run.parent)) if run.parent else {}
    row = {f"test_{k}": m["test"][k] for k in ("wga", "acc", "balanced_acc", "macro_f1")}
    row.update(val_wga=m["val"]["wga"], n_removed=m["n_removed"], method_s=m["seconds"],
               wall_s=used.get("wall_s", math.nan), cpu_s=used.get("cpu_s", math.nan),
               peak_mb=used.get("peak_mb", math.nan), analysis_wall_s=analysis.get("wall_s", math.nan))
    row.update({f"info.{k}": float(v) for k, v in (m.get("info") or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return row


def task_rows(store: RunStore, records: list[dict]) -> pd.DataFrame:
    """One row per task: cell, seed, state, run ids and (when done) its numbers."""
    rows = []
    for rec in records:
        row = {k: rec[k] for k in ("cell", "method", "seed", "state", "analysis", "run")}
        if rec["state"] == "done":
            row.update(metrics_of(store, rec["run"]))
        rows.append(row)
    return pd.DataFrame(rows)


def study_table(rows: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Per cell (in study order): seeds done and failed, runs, and <metric>_mean / <metric>_std
    (sample std, NaN with one seed) of the study's metrics and every info.* number."""
    info = sorted(c for c in rows.columns if c.startswith("info.") and c not in metrics)
    columns = [m for m in (*metrics, *info) if m in rows.columns]
    out = []
    for cell, group in rows.groupby("cell", sort=False):
        done = group[group["state"] == "done"]
        row = {"cell": cell, "method": group["method"].iloc[0], "seeds": len(done),
               "failed": int((group["state"] == "failed").sum()),
               "runs": " ".join(done["run"]), "analyses": " ".join(dict.fromkeys(done["analysis"]))}
        for m in columns:
            values = done[m].astype(float).to_numpy()
            values = values[~np.isnan(values)]
            row[f"{m}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        out.append(row)
    return pd.DataFrame(out)


def metric_names(table: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text, 'mean ± std' per metric (accuracies in %), for printing."""
    out = table[["cell", "seeds", "failed"]].copy()
    for m in metric_names(table):
        scale = 100.0 if m in ACCURACIES else 1.0
        mean, std = table[f"{m}_mean"] * scale, table[f"{m}_std"] * scale
        out[m + (" %" if m in ACCURACIES else "")] = [
            "—" if math.isnan(a) else f"{a:.1f}" + ("" if math.isnan(s) else f" ± {s:.1f}")
            for a, s in zip(mean, std)]
    return out


def write(run: Run, table: pd.DataFrame) -> None:
    write_csv_atomic(run.file("table.csv"), table)
    run.write_json("table", table.astype(object).where(table.notna(), None).to_dict(orient="records"))


def read(run: Run) -> pd.DataFrame:
    return pd.read_csv(run.file("table.csv", create_parent=False))
