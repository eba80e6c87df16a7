"""Shared fixtures: a tiny copy of the sample and one tiny finished analysis (built once)."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.runs import jobs
from core.pipeline.analysis import TARGET, create_analysis_run
from core.config import AnalysisConfig, analysis_config
from core.runs.store import Run, RunStore
from sample_data.make_sample import generate
from tests.spies import recorded_training

pytest_plugins = ["tests.dashboard.fixtures"]  # the dashboard's tiny analysis, for tests/views/ too

TINY_SCALE = 0.1  # 300 train / 40 val / 80 test images
TINY_CLASSES = 3  # the multi-class tiny sample: 3 shapes x 2 places = 6 groups


def tiny_config(root: Path, **settings) -> AnalysisConfig:
    """Seconds, not minutes: 2 epochs, T = 2, 256 projected dimensions (settings override)."""
    return analysis_config(root, **{"epochs": 2, "device": "cpu", "n_models": 2, "proj_dim": 256, **settings})


def analysed(root: Path, workdir: Path) -> Run:
    """A finished tiny_config analysis of `root` in `workdir`."""
    run = create_analysis_run(RunStore(workdir), tiny_config(root))
    jobs.run_inline(run, TARGET)
    return run


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_sample")
    generate(root, seed=0, scale=TINY_SCALE)
    return root


@pytest.fixture(scope="session")
def tiny_analysis(tiny_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A finished analysis run in its own work directory (treat as read-only)."""
    return analysed(tiny_sample, tmp_path_factory.mktemp("workdir"))


@pytest.fixture(scope="session")
def tiny_multiclass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator's multi-class variant: 3 classes, 6 (class, place) groups, same sizes."""
    root = tmp_path_factory.mktemp("tiny_multiclass")
    generate(root, seed=0, scale=TINY_SCALE, n_classes=TINY_CLASSES)
    return root


@pytest.fixture(scope="session")
def tiny_multiclass_analysis(tiny_multiclass: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A finished analysis of the multi-class tiny sample (treat as read-only)."""
    return analysed(tiny_multiclass, tmp_path_factory.mktemp("workdir_multiclass"))


@pytest.fixture
def train_calls():
    """The (model, kwargs) of every core.train.training.train call made during the test."""
    with recorded_training() as calls:
        yield calls
