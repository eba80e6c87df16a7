"""kill -9 at seeded random moments of the sample pipeline; rerunning resumes it.

    python -m benchmarks.faults [--kills 20] [--seed 0] [--scale 0.1] [--epochs 2] [--models 2]
                                [--proj-dim 256] [--workdir DIR]

The pipeline is what `d3m pipeline` runs, as background jobs: the analysis (ERM, T-model TRAK
ensemble, selections), then D3M with the default k and its random control. One uninterrupted
run gives the reference result and time. Then, `--kills` times, a fresh pipeline is started
in its own work directory and its running job's process group is sent SIGKILL at a moment
drawn uniformly from (0, reference time); the same calls are made again, which resume the
dead run from its last finished stage. Reported:

  kills          moments that hit a running job (one drawn after a slower-than-reference
                 pipeline ended kills nothing: counted in finished_before_kill)
  corrupted      pipelines that did not finish after the rerun, or left an artifact that
                 does not load (a partly written file)
  resumed_equal  pipelines whose result equals the reference: the same scores, removed ids
                 and val/test metrics of ERM, D3M and the random control
  mean_saved_s   mean of (reference time - time the resume took): time saved against
                 starting over

The images are decoded once into a shared cache, so every pipeline, the reference included,
starts from decoded images. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.attribution.factors import open_scores
from core.runs import jobs
from core.pipeline.analysis import start_analysis
from core.train.checkpoints import load_checkpoint
from core.config import AnalysisConfig, analysis_config
from core.pipeline.debias import start_debias
from core.io import read_json
from core.runs.store import Run, RunStore
from core.views.summary import control_of
from sample_data.make_sample import generate


KILLED_IN: list[str] = []  # the stage each kill hit


def wait_or_kill(run: Run, t0: float, kill_at: float | None) -> str:
    """Follow a job; SIGKILL its process group once `kill_at` seconds since t0 have passed."""
    while True:
        status = run.status()
        if not jobs.is_active(status):
            return status["state"]
        if kill_at is not None and time.perf_counter() - t0 >= kill_at and status.get("pid"):
            try:
                os.killpg(status["pid"], signal.SIGKILL)
            except ProcessLookupError:
                continue  # it just ended: look again
            KILLED_IN.append(f"{run.kind}: {status.get('stage') or status['state']}")
            jobs.wait(run, poll=0.05, timeout=30)
            return "killed"
        time.sleep(0.02)


def pipeline(store: RunStore, cfg: AnalysisConfig, kill_at: float | None = None) -> tuple[str, Run | None]:
    """Analysis then D3M (+ random control) as jobs; ('killed' | final state, debias run)."""
    t0 = time.perf_counter()
    analysis = start_analysis(store, cfg)
    state = wait_or_kill(analysis, t0, kill_at)
    if state != "done":
        return state, None
    run = start_debias(store, analysis.id, "d3m", {"seed": cfg.train.seed})
    return wait_or_kill(run, t0, kill_at), run


def result(store: RunStore, run: Run) -> dict:
    analysis = store.get(run.parent)
    control = control_of(store, run)
    return {"scores": open_scores(analysis.path).to_dense(),
            "removed": run.read_array("removed_ids", mmap=False),
            "metrics": [{s: r.read_json("metrics")[s] for s in ("val", "test")} for r in (analysis, run, control)]}


def equal(a: dict, b: dict) -> bool:
    return (np.array_equal(a["scores"], b["scores"]) and np.array_equal(a["removed"], b["removed"])
            and a["metrics"] == b["metrics"])


def unreadable(workdir: Path) -> list[str]:
    """Artifacts that do not load, and partly written files left behind."""
    bad = [str(p) for p in (workdir / "runs").rglob("*.tmp")]
    for path in (workdir / "runs").rglob("*"):
        try:
            if path.suffix == ".json":
                read_json(path)
            elif path.suffix == ".npy":
                np.load(path, mmap_mode="r")
            elif path.suffix == ".pt":
                load_checkpoint(path)
        except Exception as exc:  # any failure to load is corruption
            bad.append(f"{path}: {exc}")
    return bad


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=0.1, help="sample size (1.0 = the built-in sample)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--proj-dim", type=int, default=256)
    parser.add_argument("--workdir", default=None)
    return parser.parse_args(argv)


def fresh(base: Path, name: str) -> RunStore:
    """The run store in base/NAME, sharing base/cache (the decoded images)."""
    (base / name).mkdir(parents=True, exist_ok=True)
    if not (base / name / "cache").exists():
        (base / name / "cache").symlink_to(base / "cache", target_is_directory=True)
    return RunStore(base / name)


def prepare(args: argparse.Namespace) -> tuple[Path, AnalysisConfig]:
    """The work folder with the sample generated and decoded once (outside every timing), and the config."""
    base = Path(args.workdir or tempfile.mkdtemp(prefix="d3m-faults-"))
    data = base / "data"
    if not (data / "metadata.csv").exists():
        generate(data, seed=0, scale=args.scale)
    cfg = analysis_config(data, epochs=args.epochs, n_models=args.models, proj_dim=args.proj_dim, device="cpu")
    (base / "cache").mkdir(exist_ok=True)
    from core.pipeline.preflight import check_analysis
    check_analysis(cfg, base / "cache")  # decode once, outside every timing
    return base, cfg


def reference_run(base: Path, cfg: AnalysisConfig) -> tuple[dict, float]:
    """One uninterrupted pipeline: its result and seconds."""
    start = time.perf_counter()
    state, ref_run = pipeline(fresh(base, "reference"), cfg)
    t_full = time.perf_counter() - start
    assert state == "done", f"the reference pipeline {state}"
    reference = result(fresh(base, "reference"), ref_run)
    print(f"reference pipeline: {t_full:.1f} s", flush=True)
    return reference, t_full


def kill_and_resume(store: RunStore, cfg: AnalysisConfig, kill_at: float, reference: dict, t_full: float) -> dict:
    """A fresh pipeline killed at `kill_at` s, then the same calls again; the row reported for it."""
    KILLED_IN.clear()
    state, _ = pipeline(store, cfg, kill_at)
    stage = KILLED_IN[0] if KILLED_IN else ""
    t0 = time.perf_counter()
    final, run = pipeline(store, cfg)  # the same calls again: resume
    t_resume = time.perf_counter() - t0
    bad = unreadable(store.workdir)
    ok = final == "done" and not bad
    same = ok and equal(result(store, run), reference)
    return {"kill_at_s": round(kill_at, 2), "killed": state == "killed", "stage": stage,
            "resume_s": round(t_resume, 2), "saved_s": round(t_full - t_resume, 2),
            "corrupted": not ok, "equal": bool(same), "problems": bad[:3]}


def summarise(rows: list[dict], t_full: float, args: argparse.Namespace) -> dict:
    killed = [r for r in rows if r["killed"]]  # a moment drawn after the pipeline ended kills nothing
    return {"kills": len(killed), "drawn": len(rows), "finished_before_kill": len(rows) - len(killed),
            "corrupted": sum(r["corrupted"] for r in rows), "resumed_equal": sum(r["equal"] for r in killed),
            "mean_saved_s": round(float(np.mean([r["saved_s"] for r in killed])), 2) if killed else 0.0,
            "mean_resume_s": round(float(np.mean([r["resume_s"] for r in killed])), 2) if killed else 0.0,
            "full_pipeline_s": round(t_full, 2),
            "config": {"scale": args.scale, "epochs": args.epochs, "models": args.models,
                       "proj_dim": args.proj_dim, "seed": args.seed},
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"torch {torch.__version__}, {torch.get_num_threads()} threads"}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    base, cfg = prepare(args)
    reference, t_full = reference_run(base, cfg)
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.kills):
        store = fresh(base, f"kill-{i:02d}")
        kill_at = float(rng.uniform(0, t_full))
        rows.append(kill_and_resume(store, cfg, kill_at, reference, t_full))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(summarise(rows, t_full, args)))


if __name__ == "__main__":
    main()
