"""A tiny sample, analysed once per session (epochs 2, T = 2, proj_dim 256) with one D3M run
and its random control, shared by the page (AppTest) and core/views tests."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from benchmarks.browser import browser_page, chromium
from core.config import PROJECT_ROOT
from core.runs import jobs
from core.pipeline.analysis import TARGET as ANALYSIS_TARGET, create_analysis_run, load_run_dataset
from core.data.dataset import Dataset
from core.pipeline.debias import TARGET, create_debias_run
from core.progress import silent
from core.runs.store import Run, RunStore
from sample_data.make_sample import generate
from tests.conftest import TINY_SCALE, tiny_config

ROOT = PROJECT_ROOT
APP = str(ROOT / "app.py")
CHOICES = ("flagged", "excluded_cells", "pseudo_group_names")  # user choices persisted with the analysis


@dataclass
class Tiny:
    data_root: Path
    workdir: Path
    store: RunStore
    analysis: Run
    d3m: Run | None
    control: Run | None
    data: Dataset


def make_sample(out: Path) -> Path:
    generate(out, seed=0, scale=TINY_SCALE)
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    base = tmp_path_factory.mktemp("tiny")
    data_root = make_sample(base / "data")
    store = RunStore(base / "work")
    analysis = create_analysis_run(store, tiny_config(data_root))
    jobs.run_inline(analysis, ANALYSIS_TARGET)
    d3m = create_debias_run(store, analysis.id, "d3m", {"seed": 0})
    jobs.run_inline(d3m, TARGET)
    control = next(r for r in store.list("debias") if r.config().get("control_of") == d3m.id)
    data = load_run_dataset(tiny_config(data_root), analysis, silent)
    return Tiny(data_root, base / "work", store, analysis, d3m, control, data)


@pytest.fixture(scope="session")
def tiny_numeric(tmp_path_factory) -> Tiny:
    """The tiny sample with its labels written as 0 / 1 and `size` as 0 / 1 (sample_data's
    --labels int), analysed like `tiny`; no debias run (d3m and control are None)."""
    base = tmp_path_factory.mktemp("tiny_numeric")
    data_root = base / "data"
    generate(data_root, seed=0, scale=TINY_SCALE, labels="int")
    store = RunStore(base / "work")
    analysis = create_analysis_run(store, tiny_config(data_root))
    jobs.run_inline(analysis, ANALYSIS_TARGET)
    data = load_run_dataset(tiny_config(data_root), analysis, silent)
    return Tiny(data_root, base / "work", store, analysis, None, None, data)


@pytest.fixture
def tiny_copy(tmp_path, tiny) -> RunStore:
    """A private copy of the tiny work directory, for tests that add or delete runs."""
    shutil.copytree(tiny.workdir, tmp_path / "work")
    return RunStore(tmp_path / "work")


def open_app(monkeypatch, data_root: Path, workdir: Path, page: str | None = None) -> AppTest:
    """The app on a dataset folder and work directory (through the env defaults), on one page."""
    monkeypatch.setenv("D3M_DATA", str(data_root))
    monkeypatch.setenv("D3M_WORKDIR", str(workdir))
    at = AppTest.from_file(APP, default_timeout=120).run()
    if page:
        at.switch_page(f"dashboard/pages/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.fixture
def page():
    """A fresh page in Debian's Chromium (benchmarks.browser.browser_page), closed afterwards;
    skips when chromium or the playwright package is missing. Request it before a fixture
    that serves the app, so that the skip comes before the work."""
    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    with browser_page() as page:
        yield page


@pytest.fixture
def fresh_choices(tiny):
    """Each test starts with no flagged examples, excluded cells or renamed pseudo-groups."""
    for name in CHOICES:
        tiny.analysis.file(f"{name}.json", create_parent=False).unlink(missing_ok=True)
    yield tiny
    for name in CHOICES:
        tiny.analysis.file(f"{name}.json", create_parent=False).unlink(missing_ok=True)


@pytest.fixture
def broken_data(tmp_path, tiny) -> Path:
    """A copy of the tiny sample whose metadata.csv has a bad split on line 3."""
    root = tmp_path / "broken"
    shutil.copytree(tiny.data_root, root)
    lines = (root / "metadata.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[2] = "training"
    lines[2] = ",".join(cells)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root
