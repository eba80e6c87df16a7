"""The default gradient scope "auto": one rule (core.attribution.gradients.resolve_scope), applied
where the scores are made (model_scores) and recorded by the analysis.

The rule follows the measurements in BENCHMARKS.md (attribution: cost and fidelity): the final
layer on the 3,000-example sample, the last three linear/conv layers at 20,000 train examples
(and from there on); it switches at AUTO_WIDE_FROM train examples.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.attribution import gradients
from core.attribution.gradients import AUTO_WIDE_FROM, resolve_scope
from core.attribution.trak import model_scores
from core.config import TrakConfig, analysis_config
from core.pipeline.preflight import check_settings
from core.train.models import SmallCNN

N_TRAIN, N_TARGET = 40, 6


@pytest.mark.parametrize("n, want", [(0, "last"), (3_000, "last"), (AUTO_WIDE_FROM - 1, "last"),
                                     (AUTO_WIDE_FROM, "last:3"), (20_000, "last:3"), (80_000, "last:3"),
                                     (160_000, "last:3")])
def test_auto_switches_to_the_last_three_layers_at_the_threshold(n, want):
    assert resolve_scope("auto", n) == want
    for explicit in ("last", "all", "last:2"):  # any other scope is used as given, at every size
        assert resolve_scope(explicit, n) == explicit


def test_threshold_lies_between_the_measured_sizes():
    assert 3_000 < AUTO_WIDE_FROM <= 20_000  # last measured best at 3k, last:3 at 20k


def test_auto_is_the_default_and_passes_the_settings_check(tmp_path):
    assert TrakConfig().scope == "auto"
    check_settings(analysis_config(tmp_path, scope="auto"))
    with pytest.raises(ValueError, match="use auto, all, last or last:N"):
        check_settings(analysis_config(tmp_path, scope="some"))


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(N_TRAIN + N_TARGET, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=len(images))
    model = SmallCNN(3, image_size=8, width=4).eval()
    return model, images, labels, np.arange(N_TRAIN), np.arange(N_TRAIN, N_TRAIN + N_TARGET)


def scores(problem, folder, scope: str) -> np.ndarray:
    model, images, labels, train_idx, target_idx = problem
    out = np.zeros((len(target_idx), len(train_idx)), np.float32)
    cfg = TrakConfig(scope=scope, proj_dim=64, batch_size=8, chunk_size=16)
    return model_scores(model, images, labels, train_idx, target_idx, cfg, 3, torch.device("cpu"), folder, out)


@pytest.mark.parametrize("threshold, want", [(N_TRAIN, "last:3"), (N_TRAIN + 1, "last")])
def test_model_scores_use_the_resolved_scope(problem, tmp_path, monkeypatch, threshold, want):
    """With the threshold moved to this problem's size, "auto" scores are exactly those of the
    scope the rule names (and not those of the other), and the feature store records that scope."""
    monkeypatch.setattr(gradients, "AUTO_WIDE_FROM", threshold)
    auto = scores(problem, tmp_path / "auto", "auto")
    other = {"last:3": "last", "last": "last:3"}[want]
    np.testing.assert_array_equal(auto, scores(problem, tmp_path / want, want))
    assert not np.allclose(auto, scores(problem, tmp_path / other, other))
    assert json.loads((tmp_path / "auto" / "metadata.json").read_text())["scope"] == want


@pytest.mark.parametrize("fixture", ["tiny_analysis", "tiny_multiclass_analysis"])
def test_analysis_records_the_scope_it_used(fixture, request):
    run = request.getfixturevalue(fixture)
    n_train = len(run.read_array("train_ids"))
    assert run.config()["trak"]["scope"] == "auto"
    assert run.read_json("metrics")["trak_scope"] == ("last:3" if n_train >= AUTO_WIDE_FROM else "last") == "last"
