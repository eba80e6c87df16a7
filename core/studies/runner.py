"""Running a study on Ray: every analysis and every cell is a Ray task; the driver writes the store.

Design (the simplest that needs no shared file system for results):
- The driver (the `study` run's job, or `d3m ablate`) expands the study into tasks (cell x
  seed). An analysis config met before is looked up in the store (`find_done`, what
  `start_analysis(reuse=True)` does), else it becomes one Ray task; so does every cell whose
  debias run (same analysis, method, options) is not in the store yet. A cell's task takes
  its analysis task's result as an argument, so Ray runs it when the analysis is done.
- Before any task: the datasets are loaded once here (decoded into the work directory's image
  cache), every other node is checked to see the same copies (core/studies/nodes.py), and each
  task's resources are set (core/studies/resources.py: num_gpus when the cluster has GPUs and
  the device is auto or cuda; memory estimated from the data's size).
- Workers compute in a work folder of their own on their node through `start_analysis` /
  `start_debias` (core/studies/tasks.py) and return the run folders as bytes; the driver
  imports them under their own ids as they arrive and records each cell's state in the study
  run's cells.json. Finished cells are in the store at once, so a study stopped or crashed
  resumes where it was.
- A worker lost mid-task is retried by Ray (`max_retries`) and resumes in the same node's
  folder from the last finished stage (ERM, each ensemble member, the scores, the method); a
  task that raises is recorded as a failed cell with its traceback, and the rest goes on.
  One torch thread per task. With `members` (auto: when the cluster has more task slots than
  analyses to run) an analysis's ensemble members are Ray tasks of their own.
- Ray: an embedded local instance with this machine's cores, or an existing cluster when an
  address is given (`--ray ADDRESS` or D3M_RAY_ADDRESS), with the code shipped
  (core/studies/cluster.py). A Ray already initialised in this process (tests, notebooks) is
  used as it is. A study whose cells are all in the store starts no Ray at all.
"""
from __future__ import annotations

import json
import re
import traceback
from typing import Callable

import ray
import torch

from core.config import AnalysisConfig, to_dict
from core.data.dataset import load_dataset
from core.pipeline.debias import debias_config
from core.progress import Reporter
from core.runs.store import Run, RunStore
from core.studies import table as tables
from core.studies.cluster import ClusterError, address, connect, nodes, shutdown  # noqa: F401  (re-exported)
from core.studies.grid import DEFAULT_RATE, Task, estimate_seconds, tasks
from core.studies.nodes import check_nodes
from core.studies.resources import task_options
from core.studies.spec import Study, ensure_data
from core.studies.study_runs import study_of
from core.studies.tasks import analysis_task, import_runs, method_task, pack

MAX_RETRIES = 2  # a worker lost mid-task (node died, OOM-killed) runs again; exceptions do not
MEMBERS = ("auto", "serial", "ray")


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _analysis(config: dict, cache_dir: str | None, node_dir: str | None, members: bool) -> dict:
    torch.set_num_threads(1)
    return analysis_task(config, cache_dir, node_dir, members)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _method(analysis: dict, method: str, params: dict, control: bool, cache_dir: str | None,
            node_dir: str | None) -> dict:
    torch.set_num_threads(1)
    return method_task(analysis, method, params, control, cache_dir, node_dir)


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
                          lambda: started.append(connect(config.get("ray_address"), config.get("num_cpus"))),
                          {k: config.get(k) for k in ("node_dir", "gpus_per_task", "members")})
    finally:
        if any(started):
            ray.shutdown()
    tables.write(run, tables.study_table(tables.task_rows(store, records), study.metrics))


def execute(store: RunStore, study: Study, run: Run, report: Reporter, ensure_ray: Callable[[], None],
            settings: dict | None = None) -> list[dict]:
    """Reuse what the store has, check the cluster, submit the rest, import results as they
    arrive; the records. `settings`: node_dir, gpus_per_task, members (see the module doc)."""
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
        placed = _place(store, to_run, analyses, settings or {})  # raises before any task starts
        _submit(store, study, records, to_run, analyses, pending, placed)
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


def _place(store: RunStore, to_run: list[tuple], analyses: dict[str, str | None], settings: dict) -> dict:
    """Each dataset loaded here once (decoded into the work directory's image cache, which
    local workers share), every node checked to see the same copies, each analysis config's
    task options (GPUs, memory) and whether its members are tasks of their own."""
    configs: dict[str, AnalysisConfig] = {key: task.analysis_config() for _, task, key in to_run}
    data = {}
    for cfg in configs.values():
        name = json.dumps(to_dict(cfg.data), sort_keys=True)
        if name not in data:
            data[name] = (cfg.data, load_dataset(cfg.data, cache_dir=store.workdir / "cache"))
    check_nodes([d for d, _ in data.values()], _cache(store), settings.get("node_dir"))
    fraction = settings.get("gpus_per_task")
    placed, n_train = {}, {}
    for key, cfg in configs.items():
        ds = data[json.dumps(to_dict(cfg.data), sort_keys=True)][1]
        placed[key] = {kind: task_options(kind, cfg, ds, fraction) for kind in ("analysis", "method")}
        n_train[key] = len(ds.idx("train"))
    fresh = [key for key in configs if analyses[key] is None]
    members = _members(settings.get("members") or "auto", [configs[k] for k in fresh],
                       [placed[k]["analysis"]["num_gpus"] for k in fresh])
    return {"options": placed, "members": members, "node_dir": settings.get("node_dir"), "n_train": n_train}


def _members(mode: str, fresh: list[AnalysisConfig], gpus: list[float]) -> bool:
    """Whether analyses run their ensemble members as Ray tasks: `ray`, `serial`, or `auto`:
    when the cluster has more task slots (CPUs, or GPUs / GPUs per task) than analyses to run,
    so that members use the slots analyses leave free. A task waiting for its members gives
    its CPU back but keeps its GPU, so on GPUs there must be a slot beyond the analyses."""
    if mode not in MEMBERS:
        raise ValueError(f"members must be one of {', '.join(MEMBERS)}, got {mode!r}")
    if mode == "serial" or not fresh or all(cfg.trak.n_models < 2 for cfg in fresh):
        return False
    live = nodes()
    share = max(gpus)
    slots = sum(n.gpus for n in live) / share if share else sum(n.cpus for n in live)
    if mode == "ray":
        if share and slots <= len(fresh):
            raise ClusterError(f"members as tasks need more GPU slots than the {len(fresh)} analyses to run "
                               f"({slots:g} here: each analysis keeps its GPU while its members train); "
                               "use --members serial or a smaller --gpus-per-task")
        return True
    return slots > len(fresh)


def _submit(store: RunStore, study: Study, records: list[dict], to_run: list[tuple],
            analyses: dict[str, str | None], pending: dict, placed: dict) -> None:
    """One task per missing analysis, one per cell taking its analysis task's result (or the
    stored analysis, shipped once through the object store) as an argument."""
    refs: dict[str, object] = {}
    node_dir = placed["node_dir"]
    for i, task, key in longest_first(to_run, placed["n_train"], study.control):
        options = placed["options"][key]
        if key not in refs:
            if analyses[key] is not None:
                refs[key] = ray.put(_packed(store, analyses[key]))
            else:
                refs[key] = _analysis.options(**options["analysis"]).remote(
                    to_dict(task.analysis_config()), _cache(store), node_dir, placed["members"])
                pending[refs[key]] = ("analysis", None)
        pending[_method.options(**options["method"]).remote(
            refs[key], task.cell.method, task.params(), study.control, _cache(store), node_dir)] = ("cell", i)
        records[i]["state"] = "running"


def longest_first(to_run: list[tuple], n_train: dict[str, int], control: bool) -> list[tuple]:
    """The tasks grouped by analysis, the analysis with the longest chain (its estimated time,
    core/studies/grid.py, plus its longest cell's) first, its longest cell first: Ray starts
    tasks roughly in submission order, so the critical path starts first and the short work
    fills the gaps, instead of a long k sweep starting last and running alone."""
    cost = {id(entry): estimate_seconds(entry[1], n_train[entry[2]], DEFAULT_RATE, control) for entry in to_run}
    chain: dict[str, float] = {}
    for entry in to_run:
        est = cost[id(entry)]
        chain[entry[2]] = max(chain.get(entry[2], 0.0), est["analysis_s"] + est["method_s"])
    return sorted(to_run, key=lambda e: (-chain[e[2]], e[2], -cost[id(e)]["method_s"], e[0]))


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
