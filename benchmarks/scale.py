"""CelebA-sized data on one machine (issue 20): wall time and peak memory of the default pipeline.

    python -m benchmarks.scale [--train 160000 --val 20000 --test 20000] [--epochs E]
                               [--no-default] [--data-dir DIR] [--workdir DIR]

Generates a dataset of that size with the sample's generator (sample_data/make_sample.py,
32 px; kept in --data-dir and reused by a later run of the same size), then, in a fresh
process, runs the analysis with default settings (ERM, T = 5 members, attribution kept
factored, selections) and D3M and Auto-D3M (one retrain each, no random control), while a
thread samples the process's RSS every 0.2 s and files each sample under the step running
(data, erm, members, attribution, selections, d3m, auto_d3m). Then the same at the built-in
sample's default scale (3,000 / 400 / 800) for comparison, unless --no-default. Prints each
stage's wall time and peak RSS; the last line is one JSON object: train, val, test,
peak_rss_mb, selections_s, analysis_s, total_s, stages, the analysis's own timings, and
"default" (the same at the default scale).

--synthetic measures the selection step alone (H = BᵀB, alignment, Auto-D3M, subpopulations)
on random factors of the default's shapes at these sizes: nothing is generated or trained.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from contextlib import ExitStack
from typing import Callable
from unittest import mock

import numpy as np
import pandas as pd

from core.attribution.factored import FactoredScores
from core.attribution.factors import FOLDER as FACTORS, FactorStore
from core.attribution.store import save_store
from core.config import analysis_config
from core.data.dataset import Dataset
from core.pipeline import analysis as analysis_job
from core.pipeline.analysis import TARGET as ANALYSIS, create_analysis_run, write_selections
from core.pipeline.debias import TARGET as DEBIAS, create_debias_run
from core.runs import jobs
from core.runs.store import Run, RunStore
from sample_data.make_sample import COUNTS, generate

DEFAULT = {split: COUNTS[split] for split in ("train", "val", "test")}


def dataset(base: Path, counts: dict[str, int]) -> Path:
    """The generated dataset of these sizes under base (made once; `.complete` marks it whole)."""
    root = base / f"scale-{counts['train']}-{counts['val']}-{counts['test']}"
    if not (root / ".complete").exists():
        t0 = time.perf_counter()
        generate(root, seed=0, counts=counts)
        (root / ".complete").write_text(f"{time.perf_counter() - t0:.0f} s\n")
    return root


def memory_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the process started) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """RSS every `period` s, the peak and the time spent filed under the current `stage`."""

    def __init__(self, period: float = 0.2):
        self.period, self.stage = period, "data"
        self.stages: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            entry = self.stages.setdefault(self.stage, {"wall_s": 0.0, "peak_rss_mb": 0.0})
            entry["wall_s"] += now - last
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], memory_mb("VmRSS"))
            last = now
            time.sleep(self.period)

    def entering(self, fn: Callable, stage: Callable[[], str]) -> Callable:
        """fn, setting the stage (stage() at each call) as it starts."""
        def wrapped(*args, **kwargs):
            self.stage = stage()
            return fn(*args, **kwargs)
        return wrapped

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def watch_stages(sampler: Sampler, patches: ExitStack) -> None:
    """File samples under the analysis step running: the first fit is the ERM (then its
    evaluation), later ones the members; factors and H are attribution; then the selections.
    (The run's status cannot tell: training reports once per epoch.)"""
    fits = [0]

    def fit_stage() -> str:
        fits[0] += 1
        return "erm" if fits[0] == 1 else "members"

    for owner, name, stage in ((analysis_job, "fit", fit_stage),
                               (analysis_job, "model_factors", lambda: "attribution"),
                               (FactorStore, "finish", lambda: "attribution"),
                               (analysis_job, "write_selections", lambda: "selections")):
        patches.enter_context(mock.patch.object(owner, name, sampler.entering(getattr(owner, name), stage)))


def pipeline(root: Path, workdir: Path, epochs: int | None) -> dict:
    """The analysis, D3M and Auto-D3M in this process, measured (the worker's job)."""
    store = RunStore(workdir)
    cfg = analysis_config(root, epochs=epochs)
    t0 = time.perf_counter()
    with Sampler() as sampler, ExitStack() as patches:
        watch_stages(sampler, patches)
        analysis: Run = create_analysis_run(store, cfg)
        jobs.run_inline(analysis, ANALYSIS)
        t_analysis = time.perf_counter() - t0
        for method in ("d3m", "auto_d3m"):
            sampler.stage = method
            jobs.run_inline(create_debias_run(store, analysis.id, method, {"seed": 0}, control=False), DEBIAS)
    metrics = analysis.read_json("metrics")
    return {"peak_rss_mb": memory_mb("VmHWM"), "analysis_s": t_analysis, "total_s": time.perf_counter() - t0,
            "selections_s": metrics["timings"]["selections"], "stages": sampler.stages,
            "timings": metrics["timings"], "epoch_seconds": metrics["epoch_seconds"],
            "files_mb": sum(p.stat().st_size for p in analysis.path.rglob("*") if p.is_file()) / 1e6}


def write_factors(folder: Path, members: int, member: Callable[[int], tuple]) -> tuple[FactoredScores, float]:
    """Factors in an analysis folder (nothing trained) from `member(t)` = (Φ_t, p_t, Q_t), made
    one member at a time, and the seconds H = BᵀB took."""
    qs = []
    for t in range(members):
        phi, probs, q = member(t)
        save_store(folder / f"ensemble/features_{t}", {"seed": t}, phi, probs)
        qs.append(q)
    store = FactorStore(folder / FACTORS, {"n": int(phi.shape[0]), "m": int(q.shape[0]), "members": [
        {"features": f"features_{t}", "seed": t} for t in range(members)]})
    for t, q in enumerate(qs):
        store.save_q(t, q)
    t0 = time.perf_counter()
    return store.finish(), time.perf_counter() - t0


def synthetic_factors(folder: Path, n: int, m: int, rng: np.random.Generator, members: int = 5,
                      k: int = 258) -> tuple[FactoredScores, float]:
    """Random factors of the default's shapes: T members of k features; k = 258 (the default):
    the binary final layer's 129 x 2, whose two output rows cancel (as a margin gradient's do);
    any other k: full-rank features, as all layers give (1,730 for the small CNN at proj_dim 2048)."""
    def member(t: int) -> tuple:
        half = rng.normal(size=(n, k // 2)).astype(np.float32)
        phi = np.hstack([half, -half]) if k == 258 else rng.normal(size=(n, k)).astype(np.float32)
        return phi, rng.uniform(0.05, 0.95, n).astype(np.float32), rng.normal(size=(m, k)).astype(np.float32)
    return write_factors(folder, members, member)


def synthetic_selections(counts: dict[str, int], workdir: Path, k: int) -> dict:
    """The selection step alone on synthetic_factors over a random table of `counts` examples."""
    rng = np.random.default_rng(0)
    n, m = counts["train"], counts["val"]
    run = RunStore(workdir).create("analysis", {})
    scores, gram_s = synthetic_factors(run.path, n, m, rng, k=k)
    labels, place = rng.integers(0, 2, n + m), rng.integers(0, 2, n + m)
    meta = pd.DataFrame({"filename": "x", "place": place.astype(str), "size": rng.choice(["s", "l"], n + m)})
    data = Dataset(Path("."), meta, np.zeros((n + m, 1, 1, 3), np.uint8), labels, ["a", "b"], 2 * labels + place,
                   ["a0", "a1", "b0", "b1"], np.array(["train"] * n + ["val"] * m), ["place", "size"])
    t0 = time.perf_counter()
    write_selections(run, data, scores, rng.normal(size=(m, 2)).astype(np.float32))
    return {"gram_b_s": gram_s, "selections_s": time.perf_counter() - t0, "peak_rss_mb": memory_mb("VmHWM")}


def measured(root: Path | None, counts: dict[str, int], epochs: int | None, workdir: Path | None,
             k: int = 258) -> dict:
    """pipeline() (or synthetic_selections, root None) in a fresh process (so its peak RSS is
    its own), in a fresh work directory."""
    with tempfile.TemporaryDirectory(prefix="d3m-scale-", dir=workdir) as tmp:
        spec = json.dumps({"root": root and str(root), "workdir": tmp, "epochs": epochs, "counts": counts, "k": k})
        out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--worker", spec], check=True,
                             capture_output=True, text=True).stdout
    return {**counts, **json.loads(out.strip().splitlines()[-1])}


def show(name: str, result: dict) -> None:
    print(f"{name}: {result['train']:,} train / {result['val']:,} val / {result['test']:,} test: "
          f"total {result['total_s']:.0f} s (analysis {result['analysis_s']:.0f} s, selections "
          f"{result['selections_s']:.1f} s), peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"run folder {result['files_mb']:.0f} MB")
    for stage, entry in result["stages"].items():
        print(f"  {stage:12s} {entry['wall_s']:8.1f} s  peak RSS {entry['peak_rss_mb']:7.0f} MB")
    print("  analysis timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["timings"].items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=160_000)
    parser.add_argument("--val", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    parser.add_argument("--no-default", action="store_true", help="skip the default-scale comparison run")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "d3m-scale-data")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary run stores go")
    parser.add_argument("--synthetic", action="store_true",
                        help="only the selection step, on random factors of these sizes (nothing trained)")
    parser.add_argument("--k", type=int, default=258, help="--synthetic: features per member (see synthetic_factors)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        if spec["root"] is None:
            print(json.dumps(synthetic_selections(spec["counts"], Path(spec["workdir"]), spec["k"])))
        else:
            print(json.dumps(pipeline(Path(spec["root"]), Path(spec["workdir"]), spec["epochs"])))
        return
    counts = {"train": args.train, "val": args.val, "test": args.test}
    if args.synthetic:
        result = measured(None, counts, None, args.workdir, args.k)
        print(f"selections on random factors, {args.train:,} train / {args.val:,} val: H = BᵀB "
              f"{result['gram_b_s']:.1f} s, selections {result['selections_s']:.1f} s, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB")
        print(json.dumps({**result, "synthetic": True, "k": args.k}))
        return
    runs = {}
    if not args.no_default:
        runs["default"] = measured(dataset(args.data_dir, DEFAULT), DEFAULT, args.epochs, args.workdir)
        show("default scale", runs["default"])
    result = measured(dataset(args.data_dir, counts), counts, args.epochs, args.workdir)
    show("requested scale", result)
    print(json.dumps({**result, "default": runs.get("default"), "epochs": args.epochs,
                      "machine": f"{platform.node()} {platform.processor() or platform.machine()}"}))


if __name__ == "__main__":
    main()
