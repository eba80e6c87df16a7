"""Study runs in the store (kind "study"): starting one as a job, and what the Ablations page
and `d3m ablate` read from them. No Ray here: the job's target (core.studies.runner) has it.

A study run's config is the study itself and how it runs (Ray address, local CPUs, node folder,
GPUs per task, members as tasks); its artifacts: cells.json (one
record per task: cell, method, seed, state, analysis and debias run ids, reused, error and
traceback), table.csv and table.json (core/studies/table.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from core.runs import jobs
from core.progress import Reporter
from core.runs.store import Run, RunStore
from core.studies import table as tables
from core.studies.spec import Study, StudyError, load_study

TARGET = "study"  # job names (core/runs/names.py JOBS)
MEMBERS_TARGET = "analysis_on_ray"  # an analysis with its members on Ray


def study_config(study: Study, ray_address: str | None = None, num_cpus: int | None = None,
                 node_dir: str | None = None, gpus_per_task: float | None = None, members: str | None = None) -> dict:
    """The run's config: the study, and how it runs (Ray address, local CPUs, each node's
    folder, GPUs per task, members as tasks: core/studies/runner.py)."""
    return {"study": dataclasses.asdict(study), "ray_address": ray_address, "num_cpus": num_cpus,
            "node_dir": node_dir, "gpus_per_task": gpus_per_task, "members": members}


def start_study(store: RunStore, study: Study, *, ray_address: str | None = None, num_cpus: int | None = None,
                inline: bool = False, report: Reporter | None = None, **how) -> Run:
    """A study run, as a background job (or in this process with `inline`); `how`: node_dir,
    gpus_per_task, members (study_config). A run of the same study still going is returned to
    be followed; finished cells are reused either way."""
    config = study_config(study, ray_address, num_cpus, **how)
    return jobs.get_or_start(store, "study", config, TARGET, lambda: store.create("study", config, label=study.title),
                             reuse=("active",), resume=False, inline=inline, report=report)


def study_of(run: Run) -> Study:
    spec = dict(run.config()["study"])
    for key in ("seeds", "methods", "metrics", "variants"):
        spec[key] = tuple(spec[key])
    return Study(**spec)


def study_files(folder: str | Path) -> dict[str, Study | str]:
    """Each *.toml of a folder: its Study, or the one-line error that stops it from loading."""
    out: dict[str, Study | str] = {}
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            out[path.name] = load_study(path)
        except (StudyError, OSError) as exc:
            out[path.name] = str(exc)
    return out


def runs_of(store: RunStore, study: Study) -> list[Run]:
    """This study file's runs, newest first."""
    return [r for r in reversed(store.list("study")) if r.config()["study"]["path"] == study.path]


def cell_states(run: Run) -> pd.DataFrame:
    """One row per task: cell, seed, state, reused, error (empty before the job wrote any)."""
    columns = ["cell", "seed", "state", "reused", "error"]
    records = run.read_json("cells") if run.has("cells.json") else []
    return pd.DataFrame([{k: r[k] for k in columns} for r in records], columns=columns)


def bars(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """cell, mean, std of one metric (accuracies in %), for a bar chart with error bars."""
    scale = 100.0 if metric in tables.ACCURACIES else 1.0
    return pd.DataFrame({"cell": table["cell"], "mean": table[f"{metric}_mean"] * scale,
                         "std": table[f"{metric}_std"].fillna(0.0) * scale})


def compare_target(store: RunStore, table: pd.DataFrame, cell: str) -> dict:
    """Where a cell's runs are on the Compare page: its first analysis and that analysis's data."""
    row = table[table["cell"] == cell].iloc[0]
    analyses = str(row["analyses"]).split() if isinstance(row["analyses"], str) else []
    if not analyses:
        raise ValueError(f"cell {cell!r} has no finished run")
    data = store.get(analyses[0]).config()["data"]
    return {"analysis_id": analyses[0], "data_root": data["root"], "group_attribute": data["group_attribute"] or "",
            "runs": str(row["runs"]).split()}
