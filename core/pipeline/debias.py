"""The debias job: run one registered method on top of an analysis, evaluate, store.

Artifacts of a debias run (beside its config.json):
  model.pt, metrics.json (val/test metrics, n_removed, steps, seconds, method info),
  removed_ids.npy (example ids = 0-based metadata.csv rows), removed.csv (id, filename, class, group, attributes)
  stages/method.json: the method's completion marker (a resume only redoes the random control)
  stages/sweep_k<k>.json: each finished retrain of a k sweep (a resume redoes only the others)
A removal method's run also gets a random-control run removing as many examples
(config `control_of` names the run it controls).
"""
from __future__ import annotations

import shutil
import time

import numpy as np

from core.runs import jobs, stages
from core.pipeline.analysis import evaluate, load_run_dataset, workdir_of
from core.train.checkpoints import save_checkpoint
from core.config import AnalysisConfig, from_dict
from core.io import write_csv_atomic
from core.methods import CONTROL, MethodContext, get_method
from core.train.models import pick_device
from core.pipeline.preflight import check_params
from core.progress import Reporter, scaled
from core.runs.store import Run, RunStore

TARGET = "debias"  # the job name (core/runs/names.py JOBS)


def debias_config(store: RunStore, analysis_id: str, method: str, params: dict | None = None,
                  control: bool = True, control_of: str | None = None) -> dict:
    """The config of a debias run: every parameter, defaults included. An unknown or malformed
    parameter, or an analysis that is not finished, raises ValueError here."""
    m = get_method(method)
    analysis = store.get(analysis_id)
    if analysis.status().get("state") != "done":
        raise ValueError(f"analysis {analysis_id} is not finished (state {analysis.status().get('state')})")
    train_ids = analysis.read_array("train_ids")
    resolved = check_params(m.name, dict(params or {}), len(train_ids), train_ids)
    return {"analysis": analysis_id, "method": m.name, "params": resolved,
            "control": bool(control and m.removes and not m.control), "control_of": control_of}


def create_debias_run(store: RunStore, analysis_id: str, method: str, params: dict | None = None,
                      control: bool = True, control_of: str | None = None) -> Run:
    """A queued debias run (start it with jobs.start(run, TARGET))."""
    config = debias_config(store, analysis_id, method, params, control, control_of)
    label = f"{get_method(method).title}" + (f" (control of {control_of})" if control_of else "")
    return store.create("debias", config, parent=analysis_id, label=label)


def start_debias(store: RunStore, analysis_id: str, method: str, params: dict | None = None, *,
                 control: bool = True, reuse: bool = False, inline: bool = False) -> Run:
    """The one way to run a method on an analysis (CLI, pages, benchmarks, studies).

    Params are checked first (options, k and k sweep against the training split, flagged ids).
    A run with exactly this config that failed, was cancelled or died is resumed from its last
    finished stage (same seeds: the same result as a fresh run, sooner). With `reuse`, a
    finished one is returned as it is (and one still running, to be followed). Otherwise a new
    run is created and started as a background job, or in this process with `inline`."""
    config = debias_config(store, analysis_id, method, params, control)
    return jobs.get_or_start(store, "debias", config, TARGET,
                             lambda: create_debias_run(store, analysis_id, method, params, control),
                             parent=analysis_id, reuse=("done", "active") if reuse else (), inline=inline)


def run_debias(run: Run, report: Reporter) -> None:
    """Job target: method -> retrained model -> metrics and removed ids (-> random control).

    Rerun on the same folder (core.runs.jobs.resume), a finished method stage is kept and only the
    random control is resumed or run."""
    cfg = run.config()
    store = RunStore(workdir_of(run))
    analysis = store.get(cfg["analysis"])
    acfg = from_dict(AnalysisConfig, analysis.config())
    if not stages.is_done(run, "method"):
        run_method(run, analysis, acfg, report)
    if cfg.get("control"):
        removed_ids = run.read_array("removed_ids")
        params = {"k": int(len(removed_ids)), "seed": int(cfg["params"].get("seed", acfg.train.seed))}
        run_control(store, analysis, run, params, scaled(report, "random control: "))


def run_method(run: Run, analysis: Run, acfg: AnalysisConfig, report: Reporter) -> None:
    """The method's stage: retrained model, removed ids and metrics, then its marker."""
    cfg = run.config()
    device = pick_device(acfg.train.device)
    data = load_run_dataset(acfg, run, report)
    if not np.array_equal(data.idx("train"), analysis.read_array("train_ids")):
        raise ValueError(f"the dataset in {acfg.data.root} changed since analysis {analysis.id}: run a new analysis")
    ctx = MethodContext(data, analysis, acfg, device, report, run)
    method = get_method(cfg["method"])
    start = time.perf_counter()
    result = method.run(ctx, cfg["params"])
    seconds = time.perf_counter() - start
    ev = evaluate(result.model, data, device)
    removed_ids = ctx.train_idx[result.removed]
    save_checkpoint(run.file("model.pt"), result.model, acfg)
    run.write_array("removed_ids", removed_ids)
    write_csv_atomic(run.file("removed.csv"), data.frame(removed_ids))
    run.write_json("metrics", {"val": ev["val"], "test": ev["test"], "method": method.name,
                               "title": method.title, "group_info": method.group_info,
                               "n_removed": int(len(removed_ids)), "steps": result.steps,
                               "seed": int(cfg["params"].get("seed", acfg.train.seed)),
                               "seconds": seconds, "device": str(device), "info": result.info})
    stages.mark_done(run, "method")
    shutil.rmtree(run.file("sweep", create_parent=False), ignore_errors=True)  # a k sweep's resume cache


def run_control(store: RunStore, analysis: Run, run: Run, params: dict, report: Reporter) -> None:
    """The random control of `run` (removing as many examples): kept when finished, resumed
    when it failed or died, else created, all in this process."""
    for child in store.list("debias", parent=analysis.id):
        if child.config().get("control_of") == run.id:
            state = child.status().get("state")
            if state == "done":
                return
            if state in jobs.RESUMABLE:
                jobs.resume(child, inline=True, report=report)
                return
    child = create_debias_run(store, analysis.id, CONTROL, params, control_of=run.id)
    jobs.run_inline(child, TARGET, report=report)
