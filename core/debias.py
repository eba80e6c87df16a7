"""The debias job: run one registered method on top of an analysis, evaluate, store.

Artifacts of a debias run (beside its config.json):
  model.pt, metrics.json (val/test metrics, n_removed, steps, seconds, method info),
  removed_ids.npy (example ids = 0-based metadata.csv rows), removed.csv (id, filename, class, group, attributes)
A removal method's run also gets a random-control run removing as many examples
(config `control_of` names the run it controls).
"""
from __future__ import annotations

import time

import numpy as np

from core import jobs
from core.analysis import evaluate, load_run_dataset, workdir_of
from core.checkpoints import save_checkpoint
from core.config import AnalysisConfig, from_dict
from core.io import write_csv_atomic
from core.methods import MethodContext, get_method
from core.models import pick_device
from core.progress import Reporter, scaled
from core.runs import Run, RunStore

TARGET = "core.debias:run_debias"


def debias_config(store: RunStore, analysis_id: str, method: str, params: dict | None = None,
                  control: bool = True, control_of: str | None = None) -> dict:
    """The config of a debias run: every parameter, defaults included. An unknown or malformed
    parameter, or an analysis that is not finished, raises ValueError here."""
    m = get_method(method)
    analysis = store.get(analysis_id)
    if analysis.status().get("state") != "done":
        raise ValueError(f"analysis {analysis_id} is not finished (state {analysis.status().get('state')})")
    return {"analysis": analysis_id, "method": m.name, "params": m.resolve(dict(params or {})),
            "control": bool(control and m.removes and m.name != "random"), "control_of": control_of}


def create_debias_run(store: RunStore, analysis_id: str, method: str, params: dict | None = None,
                      control: bool = True, control_of: str | None = None) -> Run:
    """A queued debias run (start it with jobs.start(run, TARGET))."""
    config = debias_config(store, analysis_id, method, params, control, control_of)
    label = f"{get_method(method).title}" + (f" (control of {control_of})" if control_of else "")
    return store.create("debias", config, parent=analysis_id, label=label)


def start_debias(store: RunStore, analysis_id: str, method: str, params: dict | None = None, *,
                 control: bool = True, reuse: bool = False, inline: bool = False) -> Run:
    """The one way to run a method on an analysis (CLI, pages, benchmarks, studies).

    With `reuse`, a finished run with exactly this config is returned as it is (and one still
    running, to be followed). Otherwise a new run is created and started as a background job,
    or in this process with `inline`."""
    if reuse:
        config = debias_config(store, analysis_id, method, params, control)
        found = (store.find_done("debias", config, parent=analysis_id)
                 or store.find_active("debias", config, parent=analysis_id))
        if found is not None:
            return found
    run = create_debias_run(store, analysis_id, method, params, control)
    if inline:
        jobs.run_inline(run, TARGET)
    else:
        jobs.start(run, TARGET)
    return run


def run_debias(run: Run, report: Reporter) -> None:
    """Job target: method -> retrained model -> metrics and removed ids (-> random control)."""
    cfg = run.config()
    store = RunStore(workdir_of(run))
    analysis = store.get(cfg["analysis"])
    acfg = from_dict(AnalysisConfig, analysis.config())
    device = pick_device(acfg.train.device)
    data = load_run_dataset(acfg, run, report)
    if not np.array_equal(data.idx("train"), analysis.read_array("train_ids")):
        raise ValueError(f"the dataset in {acfg.data.root} changed since analysis {analysis.id}: run a new analysis")
    ctx = MethodContext(data, analysis, acfg, device, report)
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
                               "seconds": seconds, "info": result.info})
    if cfg.get("control"):
        params = {"k": int(len(removed_ids)), "seed": int(cfg["params"].get("seed", acfg.train.seed))}
        child = create_debias_run(store, analysis.id, "random", params, control_of=run.id)
        jobs.run_inline(child, TARGET, report=scaled(report, "random control: "))

