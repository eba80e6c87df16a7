"""Tables and summaries of stored runs, shared by the CLI, the Compare page and benchmarks."""
from __future__ import annotations

import pandas as pd

from core.methods.base import BASELINE, CONTROL
from core.runs.store import Run, RunStore


def headline(metrics: dict) -> dict:
    """The figures a comparison needs from one run's metrics.json."""
    test, val = metrics["test"], metrics["val"]
    return {"test_wga": test["wga"], "test_acc": test["acc"], "test_balanced_acc": test["balanced_acc"],
            "test_macro_f1": test.get("macro_f1", float("nan")), "val_wga": val["wga"],
            "per_group": test["per_group"]}


def control_of(store: RunStore, run: Run) -> Run | None:
    """The random-control run made for `run` (None if there is none or it is not done)."""
    for other in store.list("debias", parent=run.parent):
        if other.config().get("control_of") == run.id and other.status().get("state") == "done":
            return other
    return None


def pipeline_summary(store: RunStore, run: Run) -> dict:
    """ERM vs the debiased run vs its random control, as `d3m pipeline` prints it."""
    analysis = store.get(run.parent)
    metrics = run.read_json("metrics")
    control = run if metrics["method"] == CONTROL else control_of(store, run)
    return {"erm": headline(analysis.read_json("metrics")), "debiased": headline(metrics),
            "random": headline(control.read_json("metrics")) if control else None,
            "n_removed": metrics["n_removed"], "method": metrics["method"], "run_id": run.id,
            "analysis_id": analysis.id}


def runs_frame(store: RunStore, analysis_id: str | None = None) -> pd.DataFrame:
    """One row per run (ERM rows come from analyses), newest last."""
    rows = []
    for run in store.list():
        if analysis_id and analysis_id not in (run.id, run.parent):
            continue
        status, cfg = run.status(), run.config()
        row = {"run": run.id, "kind": run.kind, "state": status.get("state"), "created": run.created_at,
               "analysis": run.parent or run.id, "method": cfg.get("method", BASELINE),
               "control_of": cfg.get("control_of")}
        if run.has("metrics.json"):
            m = run.read_json("metrics")
            row.update({k: v for k, v in headline(m).items() if k != "per_group"})
            row.update(n_removed=m.get("n_removed", 0), k=m.get("info", {}).get("selected_k", m.get("n_removed", 0)),
                       seed=m.get("seed", cfg.get("train", {}).get("seed")),
                       seconds=m.get("seconds", sum(m.get("timings", {}).values())))
        rows.append(row)
    return pd.DataFrame(rows)
