"""What the Debias and Compare pages show, as plain data: method choices, run tables, curves."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.runs import jobs
from core.data.dataset import Dataset
from core.methods import Method
from core.methods.base import Report
from core.runs.store import Run, RunStore
from core.views.summary import runs_frame


def method_choices(methods: dict[str, Method], flagged: list[int], cells: list[dict],
                   data: Dataset | None = None) -> list[dict]:
    """Every registered method with what it needs from the page and whether it can run now.

    `needs` is 'k' (a removal method choosing by score or at random), 'flagged' / 'cells'
    (the user's sets) or 'seed' (a fixed recipe: ERM, SUBG, GroupDRO, ... with a seed). With
    `data`, a method that refuses the dataset (Method.refusal) is unavailable, its reason the note.
    """
    out = []
    for m in methods.values():
        needs = m.needs
        size = len(flagged) if needs == "flagged" else len(cells) if needs == "cells" else None
        note = ""
        if size == 0:
            note = ("flag examples on the Alignment page first" if needs == "flagged"
                    else "exclude subpopulations on the Subpopulations page first")
        reason = m.requires(data) if data is not None and m.requires is not None else None
        out.append({"name": m.name, "title": m.title, "group_info": m.group_info, "removes": m.removes,
                    "needs": needs, "available": size != 0 and reason is None,
                    "note": f"cannot run on this dataset: {reason}" if reason else note,
                    "options": dict(m.options), "control": m.control, "alignment": m.alignment,
                    "trains_on": m.trains_on})
    return out


def debias_params(choice: dict, seed: int, k: int | None = None, k_sweep: list[int] | None = None,
                  flagged: list[int] | None = None, cells: list[dict] | None = None,
                  options: dict | None = None) -> dict:
    """The params of core.pipeline.debias.create_debias_run for a method choice (see method_choices);
    `options` are the method's own settings (checked when the run is created)."""
    params: dict = {"seed": int(seed), **(options or {})}
    if choice["needs"] == "k":
        if k_sweep and not choice["control"]:
            params["k_sweep"] = list(k_sweep)
        else:
            params["k"] = None if k is None else int(k)
    elif choice["needs"] == "flagged":
        params["ids"] = [int(i) for i in flagged or []]
    elif choice["needs"] == "cells":
        params["cells"] = list(cells or [])
    return params


def _title(run_method: str, methods: dict[str, Method]) -> str:
    return methods[run_method].title if run_method in methods else run_method


def compare_table(store: RunStore, analysis_id: str, methods: dict[str, Method]) -> pd.DataFrame:
    """One row per run of the analysis (ERM first): what it removed and how it scores."""
    frame = runs_frame(store, analysis_id)
    cols = ["method", "k", "seed", "n_removed", "test_wga", "val_wga", "test_acc", "test_balanced_acc", "test_macro_f1",
            "seconds", "state", "run", "control_of"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    frame = frame.reindex(columns=sorted(set(frame.columns) | set(cols)))
    frame["method"] = [("ERM (analysis)" if kind == "analysis" else _title(m, methods))
                       for kind, m in zip(frame["kind"], frame["method"])]
    return frame[cols].reset_index(drop=True)


def wga_vs_k(table: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """Finished debias runs as (method, n removed, test WGA) points, and the ERM test WGA."""
    done = table[table["state"] == "done"]
    erm = done[done["method"] == "ERM (analysis)"]["test_wga"]
    points = done[done["method"] != "ERM (analysis)"][["run", "method", "n_removed", "test_wga", "seed"]]
    return points.reset_index(drop=True), (float(erm.iloc[0]) if len(erm) else None)


def sweep_curves(store: RunStore, analysis_id: str) -> pd.DataFrame:
    """The validation worst-group accuracy of every k tried by runs that swept k."""
    rows = []
    for run in store.list("debias", parent=analysis_id):
        if run.has("metrics.json"):
            m = run.read_json("metrics")
            for point in m.get("info", {}).get("sweep", []):
                rows.append({"run": run.id, "method": m.get("title", m["method"]), "k": point["k"],
                             "val_wga": point["val_wga"], "selected": point["k"] == m["info"].get("selected_k")})
    return pd.DataFrame(rows, columns=["run", "method", "k", "val_wga", "selected"])


def jaccard_matrix(runs: list[Run]) -> pd.DataFrame:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of the removal sets of finished runs (rows and columns
    by run id; 1 for two empty sets). One membership matrix (runs x removed ids) and one
    product give every intersection at once: 50 runs removing 8,000 of 160,000 each in well
    under a second, where pairwise Python sets took seconds."""
    sets = {r.id: np.unique(np.asarray(r.read_array("removed_ids"), np.int64)) for r in runs
            if r.has("removed_ids.npy")}
    names = list(sets)
    if not names:
        return pd.DataFrame()
    universe = np.unique(np.concatenate(list(sets.values())))
    member = np.zeros((len(names), len(universe)), np.float32)  # counts stay exact below 2**24
    for i, ids in enumerate(sets.values()):
        member[i, np.searchsorted(universe, ids)] = 1.0
    inter = (member @ member.T).astype(np.float64)
    size = member.sum(axis=1, dtype=np.float64)
    union = size[:, None] + size[None, :] - inter
    jac = np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)
    return pd.DataFrame(jac, index=names, columns=names)


def metrics_long(metrics: dict) -> pd.DataFrame:
    """A run's metrics.json as rows (split, metric, value), per-group accuracies included."""
    rows = []
    for split in ("val", "test"):
        m = metrics[split]
        rows += [{"split": split, "metric": k, "value": m[k]} for k in ("acc", "wga", "balanced_acc", "worst_group")]
        rows += [{"split": split, "metric": f"accuracy: {g}", "value": a} for g, a in m["per_group"].items()]
    for k in ("method", "n_removed", "seed", "steps", "seconds"):
        if k in metrics:
            rows.append({"split": "", "metric": k, "value": metrics[k]})
    return pd.DataFrame(rows, columns=["split", "metric", "value"])


def active_runs(store: RunStore, analysis_id: str) -> list[Run]:
    """Debias runs of the analysis whose job is queued or running."""
    return [r for r in store.list("debias", parent=analysis_id) if jobs.is_active(jobs.refresh(r))]


def method_reports(store: RunStore, analysis_id: str, methods: dict[str, Method]) -> list[tuple[Report, pd.DataFrame]]:
    """Each method's own table (Method.report) over its finished runs of the analysis, one row
    per run; methods without a report or without a finished run are left out."""
    out = []
    for m in methods.values():
        runs = [r for r in store.list("debias", parent=analysis_id)
                if m.report and r.config().get("method") == m.name and r.status().get("state") == "done"]
        if runs:
            out.append((m.report, pd.DataFrame([{"run": r.id, **m.report.row(r.config(), r.read_json("metrics")["info"])}
                                                for r in runs])))
    return out


def latest_result(store: RunStore, analysis_id: str) -> Run | None:
    """The newest finished debias run of the analysis that is not a random control of another."""
    done = [r for r in store.list("debias", parent=analysis_id)
            if r.status().get("state") == "done" and not r.config().get("control_of")]
    return done[-1] if done else None


def result_table(summary: dict, title: str) -> pd.DataFrame:
    """ERM vs the debiased run (`title`) vs its random control (core.views.summary.pipeline_summary),
    with each one's change in test worst-group accuracy over ERM."""
    rows = [("ERM", summary["erm"]), (title, summary["debiased"]),
            ("random control", summary["random"])]
    erm = summary["erm"]["test_wga"]
    return pd.DataFrame([{"model": name, **{k: v for k, v in h.items() if k != "per_group"},
                          "test_wga_change": h["test_wga"] - erm} for name, h in rows if h is not None])


def run_names(table: pd.DataFrame) -> list[str]:
    """Short readable run names for charts: method, k, seed and the id's random suffix."""
    out = []
    for row in table.itertuples():
        if row.method == "ERM (analysis)":
            out.append("ERM")
            continue
        k = "" if pd.isna(row.n_removed) else f", k={int(row.n_removed)}"
        seed = "" if pd.isna(row.seed) else f", seed {int(row.seed)}"
        out.append(f"{row.method}{k}{seed} [{row.run[-6:]}]")
    return out
