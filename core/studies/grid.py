"""A study's cells (method x variants x grid), its tasks (cell x seed) and the plan with an
estimated time, computed before anything runs."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pandas as pd

from core.config import AnalysisConfig, analysis_config, to_dict
from core.data.validate import metadata_path
from core.runs.store import RunStore
from core.studies.spec import Study, ensure_data

# Seconds per training example per epoch on one core when the work directory has no finished
# analysis to learn from: the sample's small CNN at 32 px, one torch thread, on this project's
# machine (a D3M retrain of 3 epochs took 4.4 s of CPU; benchmarks.ablate, README).
DEFAULT_RATE = 4.4 / (3 * 3000)
FEATURIZE_EPOCHS = 0.66  # TRAK featurization + scoring of one model, in epochs (README)
TASK_OVERHEAD_S = 3.0  # a worker's start: imports, dataset and analysis unpacked


@dataclass(frozen=True)
class Cell:
    label: str
    method: str
    params: dict  # the method's options (the seed is added per task)
    settings: dict  # analysis settings: data, group_attribute and analysis_config names


@dataclass(frozen=True)
class Task:
    cell: Cell
    seed: int

    def analysis_config(self) -> AnalysisConfig:
        s = dict(self.cell.settings)
        return analysis_config(s.pop("data"), s.pop("group_attribute"), **{**s, "seed": self.seed})

    def params(self) -> dict:
        return {**self.cell.params, "seed": self.seed}


def _label(method: str, variant: dict, point: dict, several_methods: bool) -> str:
    """'T=3, beta=2.0': the variant's label (or its settings), then the grid point's settings."""
    def text(choice: dict) -> list[str]:
        return [f"{k.partition('.')[2]}={','.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in choice.items() if k.startswith(("analysis.", f"{method}."))]

    parts = ([variant["label"]] if "label" in variant else text(variant)) + text(point)
    label = ", ".join(parts) or "default"
    return f"{method}: {label}" if several_methods else label


def cells(study: Study) -> list[Cell]:
    """Every distinct cell, in file order: methods x variants x grid points."""
    keys = list(study.grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(study.grid[k] for k in keys))]
    out, seen = [], set()
    for method in study.methods:
        for variant in study.variants or ({},):
            for point in points:
                choice = {**variant, **point}
                settings = {**study.analysis, **{k.partition(".")[2]: v for k, v in choice.items()
                                                 if k.startswith("analysis.")}}
                params = {**study.params.get(method, {}),
                          **{k.partition(".")[2]: v for k, v in choice.items() if k.startswith(f"{method}.")}}
                ident = json.dumps([method, params, settings], sort_keys=True)
                if ident not in seen:
                    seen.add(ident)
                    out.append(Cell(_label(method, variant, point, len(study.methods) > 1), method, params, settings))
    labels = [c.label for c in out]
    return [Cell(f"{c.label} #{i + 1}" if labels.count(c.label) > 1 else c.label, c.method, c.params, c.settings)
            for i, c in enumerate(out)]


def tasks(study: Study) -> list[Task]:
    return [Task(cell, seed) for cell in cells(study) for seed in study.seeds]


def seconds_per_example_epoch(store: RunStore | None) -> float:
    """Measured on the newest finished analysis of the work directory, else DEFAULT_RATE."""
    for run in reversed(store.list("analysis") if store else []):
        if run.status().get("state") == "done" and run.has("metrics.json") and run.has("train_ids.npy"):
            return float(run.read_json("metrics")["epoch_seconds"]) / len(run.read_array("train_ids"))
    return DEFAULT_RATE


def estimate_seconds(task: Task, n_train: int, rate: float, control: bool) -> dict:
    """Rough seconds of a task's analysis and method from the epochs it trains."""
    cfg = task.analysis_config()
    scale = rate * n_train * (cfg.data.image_size / 32) ** 2 * (8 if cfg.model.arch == "resnet18" else 1)
    t = cfg.trak
    analysis = scale * (cfg.train.epochs + t.n_models * (t.subset_fraction * cfg.train.epochs / t.proxy_width
                                                         + FEATURIZE_EPOCHS))
    retrains = max(1, len(task.cell.params.get("k_sweep") or []))
    method = scale * cfg.train.epochs * (retrains + (1 if control else 0))
    return {"analysis_s": analysis + TASK_OVERHEAD_S, "method_s": method + TASK_OVERHEAD_S}


def plan(study: Study, store: RunStore | None = None, workers: int = 2) -> tuple[pd.DataFrame, float]:
    """One row per task with its estimated seconds; and the estimated wall time on `workers`
    (shared analyses counted once, work spread evenly over the workers)."""
    ensure_data(study)
    rate = seconds_per_example_epoch(store)
    rows, analyses = [], {}
    for task in tasks(study):
        cfg = task.analysis_config()
        n_train = _n_train(cfg)
        est = estimate_seconds(task, n_train, rate, study.control)
        key = json.dumps(to_dict(cfg), sort_keys=True)
        analyses[key] = est["analysis_s"]
        rows.append({"cell": task.cell.label, "method": task.cell.method, "seed": task.seed,
                     "estimated_analysis_s": round(est["analysis_s"], 1),
                     "estimated_method_s": round(est["method_s"], 1)})
    frame = pd.DataFrame(rows)
    total = sum(analyses.values()) + float(frame["estimated_method_s"].sum())
    return frame, total / max(1, min(workers, len(frame)))


def _n_train(cfg: AnalysisConfig) -> int:
    split = pd.read_csv(metadata_path(cfg.data.root, cfg.data.metadata), usecols=["split"])["split"]
    return max(1, int((split == "train").sum()))

