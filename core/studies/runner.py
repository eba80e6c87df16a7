"""Running a study on Ray: every analysis and every cell is a Ray task; the driver writes the store.

Design (the simplest that needs no shared file system for results):
- The driver (the `study` run's job, or `d3m ablate`) expands the study into tasks (cell x
  seed). An analysis config met before is looked up in the store (`find_done`, what
  `start_analysis(reuse=True)` does), else it becomes one Ray task; so does every cell whose
  debias run (same analysis, method, options) is not in the store yet. A cell's task takes
  its analysis task's result as an argument, so Ray runs it when the analysis is done.
- Workers compute in a temporary work directory through `start_analysis` / `start_debias`
  (core/studies/tasks.py) and return the run folders as bytes; the driver imports them under
  their own ids as they arrive and records each cell's state in the study run's cells.json.
  Finished cells are in the store at once, so a study stopped or crashed resumes where it was.
- A worker lost mid-task is retried by Ray (`max_retries`); a task that raises is recorded as
  a failed cell with its traceback, and the rest goes on. One torch thread per task.
- Ray: an embedded local instance with this machine's cores, or an existing cluster when an
  address is given (`--ray ADDRESS` or D3M_RAY_ADDRESS). A Ray already initialised in this
  process (tests, notebooks) is used as it is. A study whose cells are all in the store
  starts no Ray at all.
"""
from __future__ import annotations

import json
import os
import re
import traceback
from typing import Callable

import ray
import torch

from core.config import to_dict
from core.data.dataset import load_dataset
from core.pipeline.debias import debias_config
from core.config import PROJECT_ROOT
from core.progress import Reporter
from core.runs.store import Run, RunStore
from core.studies import table as tables
from core.studies.grid import Task, tasks
from core.studies.spec import Study, ensure_data
from core.studies.study_runs import study_of
from core.studies.tasks import analysis_task, import_runs, method_task, pack

MAX_RETRIES = 2  # a worker lost mid-task (node died, OOM-killed) runs again; exceptions do not


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _analysis(config: dict, cache_dir: str | None) -> dict:
    torch.set_num_threads(1)
    return analysis_task(config, cache_dir)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _method(analysis: dict, method: str, params: dict, control: bool, cache_dir: str | None) -> dict:
    torch.set_num_threads(1)
    return method_task(analysis, method, params, control, cache_dir)


def connect(address: str | None = None, num_cpus: int | None = None, attempts: int = 3) -> bool:
    """Start or join Ray unless this process already has it; True when this call started it.

    A local start is tried again when Ray gives up waiting for its own processes (it waits a
    fixed 30 s, which a heavily loaded machine can exceed)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("D3M_RAY_ADDRESS") or None
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
                        "OMP_NUM_THREADS": "1"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
        return True
    for attempt in range(attempts):
        try:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                     runtime_env=env, log_to_driver=False)
            return True
        except Exception as exc:  # noqa: BLE001  (Ray raises a bare Exception for this)
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
    return True


def address() -> str:
    """The address of the Ray this process is connected to (for another driver to join)."""
    return ray.get_runtime_context().gcs_address


def shutdown() -> None:
    ray.shutdown()


def run_study(run: Run, report: Reporter) -> None:
    """Job target: run every task of the study on Ray, then write the table (CSV and JSON).
    Failed cells are in cells.json with their tracebacks; the run itself is done. Ray is
    started (or joined) only when some cell is not in the store yet."""
    config = run.config()
    study = study_of(run)
    store = RunStore(run.path.parents[1])
    started: list[bool] = []
    try:
        records = execute(store, study, run, report,
                          lambda: started.append(connect(config.get("ray_address"), config.get("num_cpus"))))
    finally:
        if any(started):
            ray.shutdown()
    tables.write(run, tables.study_table(tables.task_rows(store, records), study.metrics))


def execute(store: RunStore, study: Study, run: Run, report: Reporter, ensure_ray: Callable[[], None]) -> list[dict]:
    """Reuse what the store has, submit the rest, import results as they arrive; the records."""
    ensure_data(study)
    todo = tasks(study)
    records = [{"cell": t.cell.label, "method": t.cell.method, "seed": t.seed, "state": "pending",
                "analysis": None, "run": None, "reused": False, "error": None, "traceback": None} for t in todo]
    analyses: dict[str, str | None] = {}  # analysis config (JSON) -> a finished analysis's id
    to_run = []
    for i, task in enumerate(todo):
        key = json.dumps(to_dict(task.analysis_config()), sort_keys=True)
        if key not in analyses:
            found = store.find_done("analysis", to_dict(task.analysis_config()))
            analyses[key] = found.id if found is not None else None
        records[i]["analysis"] = analyses[key]
        try:
            done = _finished_cell(store, analyses[key], task, study.control) if analyses[key] else None
        except ValueError as exc:  # refused before anything runs (options, k against n): a failed cell
            records[i].update(state="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            continue
        if done is not None:
            records[i].update(state="done", run=done, reused=True)
        else:
            to_run.append((i, task, key))
    _save(run, records, report)
    if not to_run:
        return records
    ensure_ray()
    pending: dict = {}
    try:
        _submit(store, study, records, to_run, analyses, pending)
        _save(run, records, report)
        _collect(store, run, records, pending, report)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        for rec in records:
            if rec["state"] in ("pending", "running"):
                rec["state"] = "cancelled"
        _save(run, records, report)
    return records


def _submit(store: RunStore, study: Study, records: list[dict], to_run: list[tuple],
            analyses: dict[str, str | None], pending: dict) -> None:
    """One task per missing analysis, one per cell taking its analysis task's result (or the
    stored analysis, shipped once through the object store) as an argument."""
    refs: dict[str, object] = {}
    for i, task, key in to_run:
        if key not in refs:
            if analyses[key] is not None:
                refs[key] = ray.put(_packed(store, analyses[key]))
            else:
                cfg = task.analysis_config()
                load_dataset(cfg.data, cache_dir=store.workdir / "cache")  # decoded once, shared by local workers
                refs[key] = _analysis.remote(to_dict(cfg), _cache(store))
                pending[refs[key]] = ("analysis", None)
        pending[_method.remote(refs[key], task.cell.method, task.params(), study.control, _cache(store))] = ("cell", i)
        records[i]["state"] = "running"


def _finished_cell(store: RunStore, analysis_id: str, task: Task, control: bool) -> str | None:
    config = debias_config(store, analysis_id, task.cell.method, task.params(), control)
    found = store.find_done("debias", config, parent=analysis_id)
    return found.id if found is not None else None


def _packed(store: RunStore, analysis_id: str) -> dict:
    return {"id": analysis_id, "runs": {analysis_id: pack(store.get(analysis_id).path)}}


def _cache(store: RunStore) -> str:
    return str((store.workdir / "cache").resolve())


def _collect(store: RunStore, run: Run, records: list[dict], pending: dict, report: Reporter) -> None:
    """Import each result as it arrives (an analysis before the cells that need it)."""
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            kind, i = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001  (recorded with its traceback; the study goes on)
                if kind == "cell":  # a failed analysis fails its cells, which record it
                    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Ray colours the remote traceback
                    records[i].update(state="failed", error=_first_line(text), traceback=text)
                continue
            import_runs(store, result["runs"])
            if kind == "cell":
                records[i].update(state="done", run=result["id"],
                                  analysis=store.get(result["id"]).config()["analysis"])
            _save(run, records, report)


def _first_line(text: str) -> str:
    """The exception line of a remote traceback (its last 'SomethingError: ...' line)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^\w*(Error|Exception)\b", ln)]
    return (errors[-1] if errors else lines[-1] if lines else "unknown error").strip()


def _save(run: Run, records: list[dict], report: Reporter) -> None:
    run.write_json("cells", records)
    finished = sum(r["state"] in ("done", "failed") for r in records)
    report(f"cells done {finished}/{len(records)}", finished, len(records))
