"""Progress that a person reads at a glance: counts with their unit, percent, elapsed time."""
from __future__ import annotations

import re

import numpy as np
import torch

from core.runs import jobs
from core.config import ModelConfig, TrainConfig
from core.train.models import build_model
from core.cli import follow
from core.progress import progress_text, unit_of
from core.runs.store import RunStore
from core.train.training import train


def test_every_reported_stage_has_its_unit():
    assert unit_of("model 2/5: training") == "steps" and unit_of("ERM training") == "steps"
    assert unit_of("model 1/5: featurizing") == "examples" and unit_of("loading images") == "images"
    assert unit_of("model 1/5: scoring") == "targets" and unit_of("something new") == "items"
    assert progress_text("ERM training", 63, 756) == "ERM training: 63/756 steps"
    assert progress_text("model 1/5: featurizing", 1200, 12000) == "model 1/5: featurizing: 1,200/12,000 examples"
    assert progress_text("starting", 0, 0) == "starting"


def test_training_reports_steps_out_of_its_budget():
    """What the training loop reports is what progress_text calls steps: done ≤ total = the budget."""
    seen = []
    images = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    steps = train(build_model(ModelConfig(), 2, 32), images, np.arange(10) % 2, np.arange(10),
                  TrainConfig(epochs=3, batch_size=4), torch.device("cpu"),
                  report=lambda stage, done, total: seen.append((stage, done, total)))
    assert steps == 9 and seen[-1] == ("training", 9, 9)
    assert [d for _, d, _ in seen] == [3, 6, 9] and {t for _, _, t in seen} == {9}


def test_cli_bar_shows_percent_and_units(tmp_path, capsys):
    run = RunStore(tmp_path).create("analysis", {}, label="x")
    run.set_status(state="done", stage="model 2/5: training", done=63, total=756, fraction=63 / 756)
    follow(run)
    err = capsys.readouterr().err
    assert "analysis model 2/5: training: 63/756 steps" in err and re.search(r"\b8%\|", err)
    assert "‰" not in err and "/s" not in err
    assert jobs.is_active(run.status()) is False
