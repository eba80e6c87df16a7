"""Page speed of the running dashboard in a real browser with 160,000 training examples and 50 runs.

    .venv/bin/python -m benchmarks.pages [--n-train 160000] [--n-val 1000] [--n-test 1000] [--runs 50]
                                         [--rounds 2] [--build-only]

Builds a synthetic analysis directly in a run store (cached in --workdir): a generated
metadata.csv (label, split, group, place, size, colour, source) whose image files are hard
links to 64 distinct 32x32 PNGs, the images decoded once into the dataset cache, and the
artifacts every page reads (ids, ERM logits and metrics, factored val x train scores, alignments,
pseudo-groups, subpopulations) of the right shapes, plus `--runs` finished debias runs (random
removal sets of 1-5% of train and random test logits). NOTHING IS TRAINED: the scores are
one member's factors of a random group structure plus low-rank noise (never a dense matrix) and
the logits are random, and the selections are
computed from them by the analysis job's own `core.pipeline.analysis.write_selections`. Then it starts
`streamlit run app.py` on that work directory, opens it in Chromium (Playwright) and times, in
the browser, each widget change or page change until Streamlit is idle again
(`[data-testid="stApp"][data-test-script-state="notRunning"]`, observed by a MutationObserver
in the page). The first load is timed separately; the goal is every change after it < 1 s.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.browser import IDLE, browser_page, chromium, serve
from benchmarks.scale import write_factors
from core.runs import jobs
from core.pipeline.analysis import create_analysis_run, load_run_dataset, write_selections
from core.config import AnalysisConfig, analysis_config, from_dict
from core.io import write_csv_atomic
from core.train.metrics import group_metrics
from core.runs.store import Run, RunStore

TARGET = "benchmarks.pages:fill_synthetic"
RUN_TARGET = "benchmarks.pages:fill_debias"
ATTRIBUTES = {"place": ["land", "water"], "size": ["small", "large"], "colour": ["dark", "light", "red"],
              "source": ["field", "museum", "web", "crowd"]}
CLASSES = ["landbird", "waterbird"]
DISTINCT_IMAGES = 64


def make_data(root: Path, n: dict[str, int], seed: int = 0, classes: tuple[str, ...] = tuple(CLASSES)) -> Path:
    """metadata.csv with n[split] rows per split, labels `classes` (e.g. ("0", "1")); images are
    hard links to a few distinct PNGs."""
    if (root / "metadata.csv").exists():
        return root
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    for k in range(DISTINCT_IMAGES):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"img/base_{k}.png")
    split = np.concatenate([np.full(m, s) for s, m in n.items()])
    total = len(split)
    label = rng.integers(0, 2, total)
    spurious = np.where(split == "train", 0.95, 0.5)  # place agrees with the label in 95% of train
    place = np.where(rng.random(total) < spurious, label, 1 - label)
    df = pd.DataFrame({"filename": [f"img/e{i:07d}.png" for i in range(total)],
                       "label": np.asarray(classes)[label], "split": split})
    df["group"] = [f"{c} on {p}" for c, p in zip(df["label"], np.asarray(ATTRIBUTES["place"])[place])]
    df["place"] = np.asarray(ATTRIBUTES["place"])[place]
    for attr in ("size", "colour", "source"):
        df[attr] = rng.choice(ATTRIBUTES[attr], total)
    for i, name in enumerate(df["filename"]):
        os.link(root / f"img/base_{i % DISTINCT_IMAGES}.png", root / name)
    df.to_csv(root / "metadata.csv", index=False)
    return root


def grouped_member(g_val: np.ndarray, g_train: np.ndarray, n_groups: int, rng, noise_dims: int = 64) -> tuple:
    """One member's (Φ, p, Q) whose scores Q Bᵀ (B = diag(1 - p) Φ) are
    τ = 1e-3 · (same group ? +1 : -0.3) · s_i + noise of rank `noise_dims`, never formed."""
    strength = rng.normal(0.0, 1.0, len(g_train)).astype(np.float32)
    phi = np.zeros((len(g_train), n_groups + noise_dims), np.float32)
    phi[np.arange(len(g_train)), g_train] = 2 * strength  # 2: the (1 - p) = 0.5 below
    phi[:, n_groups:] = 2 * rng.standard_normal((len(g_train), noise_dims), np.float32)
    q = np.where(g_val[:, None] == np.arange(n_groups)[None, :], 1e-3, -0.3e-3).astype(np.float32)
    noise = 0.5e-3 / np.sqrt(noise_dims) * rng.standard_normal((len(g_val), noise_dims), np.float32)
    return phi, np.full(len(g_train), 0.5, np.float32), np.hstack([q, noise])


def fill_synthetic(run: Run, report) -> None:
    """Job target: the artifacts of a finished analysis, from random numbers (see the module doc)."""
    cfg = from_dict(AnalysisConfig, run.config())
    data = load_run_dataset(cfg, run, report)  # decodes the images into the work directory's cache
    rng = np.random.default_rng(0)
    logits = {}
    for split in ("train", "val", "test"):
        run.write_array(f"{split}_ids", data.idx(split))
    for split in ("val", "test"):
        idx = data.idx(split)
        logits[split] = (rng.normal(0, 1.5, (len(idx), data.n_classes))
                         + 1.5 * np.eye(data.n_classes)[data.labels[idx]]).astype(np.float32)
        run.write_array(f"erm_logits_{split}", logits[split])
    g_val, g_train = data.groups[data.idx("val")], data.groups[data.idx("train")]
    scores, _ = write_factors(run.path, 1, lambda t: grouped_member(g_val, g_train, data.n_groups, rng))
    report("selections", 0, 1)
    write_selections(run, data, scores, logits["val"])
    metrics = {s: group_metrics(logits[s].argmax(1), data.labels[data.idx(s)], data.groups[data.idx(s)],
                                data.group_names) for s in ("val", "test")}
    run.write_json("metrics", {**metrics, "steps": 0, "epoch_seconds": 0.0, "timings": {}, "device": "cpu",
                               "synthetic": "benchmarks.pages: random scores and logits, nothing trained"})


_LOADED: dict = {}
RUN_METHODS = ("d3m", "auto_d3m", "random", "jtt", "dfr")


def fill_debias(run: Run, report) -> None:
    """Job target: a finished debias run from random numbers (removed ids, metrics); nothing trained."""
    cfg = run.config()
    analysis = RunStore(run.path.parents[1]).get(cfg["analysis"])
    if analysis.id not in _LOADED:  # made inline one after the other: load the 160k-row table once
        _LOADED[analysis.id] = load_run_dataset(from_dict(AnalysisConfig, analysis.config()), analysis, report)
    data = _LOADED[analysis.id]
    rng = np.random.default_rng(cfg["params"]["seed"])
    train = data.idx("train")
    removed = np.sort(rng.choice(train, cfg["params"]["k"], replace=False))
    run.write_array("removed_ids", removed)
    write_csv_atomic(run.file("removed.csv"), data.frame(removed))
    metrics = {}
    for split in ("val", "test"):
        idx = data.idx(split)
        logits = rng.normal(0, 1.5, (len(idx), data.n_classes)) + 1.6 * np.eye(data.n_classes)[data.labels[idx]]
        metrics[split] = group_metrics(logits.argmax(1), data.labels[idx], data.groups[idx], data.group_names)
    run.write_json("metrics", {**metrics, "method": cfg["method"], "title": cfg["method"], "group_info": "",
                               "n_removed": int(len(removed)), "steps": 0, "seed": cfg["params"]["seed"],
                               "seconds": 0.0, "info": {"synthetic": True}})


def add_runs(store: RunStore, analysis: Run, n_runs: int) -> None:
    """`n_runs` finished synthetic debias runs of the analysis (made once, then reused)."""
    have = len(store.list("debias", parent=analysis.id))
    n_train = len(analysis.read_array("train_ids"))
    rng = np.random.default_rng(1)
    for i in range(have, n_runs):
        method = RUN_METHODS[i % len(RUN_METHODS)]
        params = {"seed": i, "k": int(rng.integers(n_train // 100, n_train // 20))}
        run = store.create("debias", {"analysis": analysis.id, "method": method, "params": params,
                                      "control": False, "control_of": None}, parent=analysis.id,
                           label=f"{method} (synthetic)")
        jobs.run_inline(run, RUN_TARGET)
    print(f"{n_runs} runs in the store ({max(0, n_runs - have)} made now)", flush=True)


def build(workdir: Path, n: dict[str, int], n_runs: int = 0) -> tuple[Path, Run]:
    """The data folder, the synthetic analysis and its runs (made once, then reused)."""
    root = make_data(workdir / f"data_{n['train']}", n)
    store = RunStore(workdir / "work")
    done = [r for r in store.list("analysis") if jobs.refresh(r).get("state") == "done"]
    if done:
        run = done[0]
    else:
        run = create_analysis_run(store, analysis_config(root))
        start = time.perf_counter()
        jobs.run_inline(run, TARGET)
        print(f"synthetic analysis {run.id} built in {time.perf_counter() - start:.0f} s", flush=True)
    add_runs(store, run, n_runs)
    return root, run


WATCH = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__runs = [];
  new MutationObserver(() => window.__runs.push([performance.now(), app.getAttribute('data-test-script-state')]))
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
DONE_SINCE = """(t0) => { const r = window.__runs.filter(e => e[0] > t0);
  return r.some(e => e[1] === 'running') && r[r.length - 1][1] === 'notRunning' ? r[r.length - 1][0] - t0 : null; }"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timer:
    """Times changes in the page: browser wall seconds to idle, and the app server's CPU seconds
    for the same span (what the change costs the server, whatever else shares the machine)."""

    def __init__(self, page, server_pid: int):
        self.page, self.pid, self.results = page, server_pid, {}

    def __call__(self, name: str, action) -> None:
        """Seconds from just before `action()` to Streamlit idle again after the rerun it caused."""
        page = self.page
        t0, c0 = page.evaluate("performance.now()"), cpu_seconds(self.pid)
        action()
        handle = page.wait_for_function(DONE_SINCE, arg=t0, timeout=300_000, polling=20)
        page.wait_for_timeout(300)  # a second rerun (st.rerun) right after the first is part of the change
        later = page.evaluate(DONE_SINCE, t0)
        wall = max(handle.json_value(), later or 0.0) / 1000
        self.results[name] = {"wall_s": wall, "server_cpu_s": cpu_seconds(self.pid) - c0}
        print(f"  {name:50s} {wall:6.2f} s wall, server CPU {self.results[name]['server_cpu_s']:.2f} s", flush=True)


def visit(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=120_000)


def pick(page, label: str, option: str, widget: str = "stSelectbox") -> None:
    """Choose `option` in the selectbox (or multiselect) labelled `label`."""
    box = page.get_by_test_id(widget).filter(has_text=label).first
    box.scroll_into_view_if_needed()
    box.locator("input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def spin(box, value: int) -> None:
    box.fill(str(value))
    box.press("Enter")


PAGES = ["Data and model", "Extremes per class", "Alignment", "Subpopulations", "Debias", "Compare runs"]


def widget_changes(page, timer: Timer) -> None:
    """One change of each kind that reruns a page with all the training examples in play."""
    visit(page, "Alignment")
    page.wait_for_selector(IDLE)
    timer("Alignment: next table page", lambda: spin(page.get_by_role("spinbutton").first, 2))
    timer("Alignment: sort by id", lambda: pick(page, "Sort by", "id"))
    timer("Alignment: 100 rows per page", lambda: pick(page, "Rows per page", "100"))
    timer("Alignment: filter class", lambda: pick(page, "Class", CLASSES[1], "stMultiSelect"))
    timer("Alignment: Auto-D3M scores (first time)", lambda: page.get_by_text("Auto-D3M (pseudo-groups)").click())
    timer("Alignment: D3M scores again", lambda: page.get_by_text("D3M (true validation groups)").click())
    visit(page, "Subpopulations")
    page.wait_for_selector(IDLE)
    timer("Subpopulations: attribute source", lambda: pick(page, "Attribute", "source"))
    visit(page, "Data and model")
    page.wait_for_selector(IDLE)
    timer("Data: count by group", lambda: pick(page, "Count examples by", "group"))


def measure(url: str, pid: int, rounds: int) -> dict:
    with browser_page() as page:
        start, c0 = time.perf_counter(), cpu_seconds(pid)
        page.goto(url)
        page.get_by_text("Test worst-group accuracy").first.wait_for(timeout=600_000)
        page.wait_for_selector(IDLE, timeout=600_000)
        first = {"wall_s": time.perf_counter() - start, "server_cpu_s": cpu_seconds(pid) - c0}
        print(f"first load (dataset and analysis read, first page drawn): {first['wall_s']:.2f} s wall, "
              f"server CPU {first['server_cpu_s']:.2f} s", flush=True)
        page.evaluate(WATCH)
        visits, changes = Timer(page, pid), Timer(page, pid)
        for r in range(rounds):
            for title in PAGES[1:] + PAGES[:1]:
                visits(f"page change, round {r + 1}: {title}", lambda: visit(page, title))
        widget_changes(page, changes)
    return {"first_load": first, "page_changes": visits.results, "widget_changes": changes.results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/d3m_bench_pages"))
    parser.add_argument("--n-train", type=int, default=160_000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50, help="finished debias runs in the store")
    parser.add_argument("--rounds", type=int, default=2, help="visits of every page (the first fills caches)")
    parser.add_argument("--build-only", action="store_true", help="make the data, analysis and runs, then stop")
    args = parser.parse_args()
    if chromium() is None and not args.build_only:
        sys.exit("benchmarks.pages needs Chromium (apt-get install -y chromium) and playwright")
    workdir = args.workdir / f"n{args.n_train}"
    workdir.mkdir(parents=True, exist_ok=True)
    root, run = build(workdir, {"train": args.n_train, "val": args.n_val, "test": args.n_test}, args.runs)
    if args.build_only:
        return
    env = {"D3M_DATA": str(root), "D3M_WORKDIR": str(workdir / "work")}
    with serve(env, log=workdir / "work" / "server.log") as app:
        res = measure(app.url, app.pid, args.rounds)
    after_first = {**res["page_changes"], **res["widget_changes"]}
    res.update(n_train=args.n_train, n_runs=args.runs, n_val=args.n_val, n_test=args.n_test, analysis=run.id, synthetic=True,
               load_average=os.getloadavg(), max_change_wall_s=max(v["wall_s"] for v in after_first.values()),
               max_change_server_cpu_s=max(v["server_cpu_s"] for v in after_first.values()),
               changes_over_1s_wall=[k for k, v in after_first.items() if v["wall_s"] >= 1.0])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
