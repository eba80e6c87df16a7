"""Streamed TRAK scoring: chunked and in-memory paths agree; the feature store is honest."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from core.attribution.gradients import make_featurizer, resolve_scope
from core.attribution.scorer import gram, scores, solve_targets
from core.attribution.store import FeatureConfigMismatch, featurize
from core.attribution.trak import model_scores
from core.config import TrakConfig
from core.train.models import SmallCNN

N_TRAIN, N_TARGET = 45, 11


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N_TRAIN + N_TARGET, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, size=len(images))
    model = SmallCNN(2, image_size=8, width=4).eval()
    return model, images, labels, np.arange(N_TRAIN), np.arange(N_TRAIN, N_TRAIN + N_TARGET)


def run(problem, folder, cfg: TrakConfig, seed: int = 7) -> np.ndarray:
    model, images, labels, train_idx, target_idx = problem
    out = np.zeros((len(target_idx), len(train_idx)), np.float32)
    return model_scores(model, images, labels, train_idx, target_idx, cfg, seed, torch.device("cpu"),
                        folder, out, weight=0.5, model_id="m")


def in_memory(problem, cfg: TrakConfig, seed: int = 7) -> np.ndarray:
    """The unchunked formula, written out: 0.5 · G (ΦᵀΦ + λI)⁻¹ Φᵀ diag(1 - p)."""
    model, images, labels, train_idx, target_idx = problem
    feat = make_featurizer(model, cfg.projector, resolve_scope(cfg.scope, len(train_idx)), cfg.proj_dim, seed)
    phi = np.zeros((len(train_idx), feat.dim), np.float32)
    p = featurize(model, feat, images, train_idx, labels, 1000, torch.device("cpu"), out=phi)
    g = np.zeros((len(target_idx), feat.dim), np.float32)
    featurize(model, feat, images, target_idx, labels, 1000, torch.device("cpu"), out=g)
    phi64 = phi.astype(np.float64)
    a = phi64.T @ phi64
    a += cfg.ridge * np.trace(a) / len(a) * np.eye(len(a))
    return 0.5 * np.linalg.solve(a, g.astype(np.float64).T).T @ phi64.T * (1 - p)


@pytest.mark.parametrize("projector", ["factored", "sparse", "dense"])
def test_streamed_scores_match_in_memory(problem, tmp_path, projector):
    cfg = TrakConfig(projector=projector, proj_dim=32, batch_size=4, chunk_size=8)  # 6 train, 2 target chunks
    streamed = run(problem, tmp_path / "small", cfg)
    one_chunk = run(problem, tmp_path / "one", replace(cfg, batch_size=64, chunk_size=4096))
    np.testing.assert_allclose(streamed, one_chunk, rtol=1e-4, atol=1e-6 * np.abs(one_chunk).max())
    want = in_memory(problem, cfg)
    np.testing.assert_allclose(streamed, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())


def test_store_keeps_features_and_gram(problem, tmp_path):
    cfg = TrakConfig(proj_dim=32, batch_size=4, chunk_size=8)
    first = run(problem, tmp_path, cfg)
    phi = np.load(tmp_path / "features.npy")
    assert phi.shape[0] == N_TRAIN and np.abs(phi).sum() > 0
    np.testing.assert_allclose(np.load(tmp_path / "gram.npy"), gram(phi.astype(np.float64)), rtol=1e-9)
    written = (tmp_path / "features.npy").stat().st_mtime_ns
    # chunking, ridge and T do not change features: the store is reused (same scores)
    np.testing.assert_allclose(run(problem, tmp_path, replace(cfg, chunk_size=16, n_models=3)), first, rtol=1e-5)
    assert (tmp_path / "features.npy").stat().st_mtime_ns == written


@pytest.mark.parametrize("change", [{"proj_dim": 64}, {"projector": "sparse"}, {"scope": "last"},
                                    {"proxy_width": 2}])
def test_mismatched_store_is_refused(problem, tmp_path, change):
    cfg = TrakConfig(proj_dim=32, batch_size=16, scope="all")
    run(problem, tmp_path, cfg)
    with pytest.raises(FeatureConfigMismatch, match="another config"):
        run(problem, tmp_path, replace(cfg, **change))
    with pytest.raises(FeatureConfigMismatch):
        run(problem, tmp_path, cfg, seed=8)  # another projection seed


def test_solve_targets_is_the_ridge_solution():
    rng = np.random.default_rng(0)
    phi, g = rng.normal(size=(30, 5)), rng.normal(size=(4, 5))
    a = phi.T @ phi
    want = g @ np.linalg.inv(a + 1e-2 * np.trace(a) / 5 * np.eye(5))
    np.testing.assert_allclose(solve_targets(gram(phi, chunk=7), g, ridge=1e-2), want, rtol=1e-8)
    out = scores(want, phi, np.full(30, 0.25), chunk=4)
    np.testing.assert_allclose(out, 0.75 * want @ phi.T, rtol=1e-5)


def test_lds_is_mean_spearman_over_targets():
    from scipy.stats import spearmanr

    from core.attribution.lds import lds, lds_per_target, subset_masks

    rng = np.random.default_rng(0)
    tau = rng.normal(size=(3, 40))
    masks = subset_masks(40, 25, 0.5, seed=1)
    assert masks.shape == (25, 40) and (masks.sum(1) == 20).all()
    margins = masks @ tau.T + rng.normal(scale=[[0.1, 1.0, 100.0]], size=(25, 3))
    want = [spearmanr(masks @ tau[j], margins[:, j])[0] for j in range(3)]
    np.testing.assert_allclose(lds_per_target(tau, masks, margins), want, rtol=1e-12)
    assert lds(tau, masks, margins) == pytest.approx(np.mean(want))
    assert want[0] > 0.9 > want[2]  # the noise level moves it: a real measurement


@pytest.mark.slow
def test_analysis_with_proxy_members_and_sparse_projection(tiny_sample, tmp_path):
    """trak.proxy_width = 2: members are half-width SmallCNNs, and the stored scores are the
    mean over the members of their own TRAK scores (recomputed here from the saved members,
    each with its own projection seed, into fresh feature folders)."""
    from core.attribution.factors import open_scores
    from core.runs import jobs
    from core.pipeline.analysis import load_run_dataset
    from core.train.checkpoints import load_checkpoint
    from core.config import AnalysisConfig, from_dict, to_dict
    from core.progress import silent
    from core.runs.store import RunStore
    from tests.conftest import tiny_config

    store = RunStore(tmp_path / "work")
    run = store.create("analysis", to_dict(tiny_config(tiny_sample, proxy_width=2, projector="sparse")))
    jobs.run_inline(run, "analysis")
    erm = load_checkpoint(run.file("erm/model.pt"))
    cfg = from_dict(AnalysisConfig, run.config())
    data = load_run_dataset(cfg, run, silent)
    want = np.zeros((len(data.idx("val")), len(data.idx("train"))), np.float32)
    for t in range(cfg.trak.n_models):
        member = load_checkpoint(run.file(f"ensemble/model_{t}.pt"))
        assert member.classifier[1].out_features * 2 == erm.classifier[1].out_features
        model_scores(member, data.images, data.labels, data.idx("train"), data.idx("val"), cfg.trak,
                     cfg.train.seed * 1000 + t + 1, torch.device("cpu"), tmp_path / f"features_{t}", want,
                     weight=1 / cfg.trak.n_models)
    np.testing.assert_allclose(open_scores(run.path).to_dense(), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_proxy_width_narrows_small_cnn_only():
    from core.attribution.trak import proxy_model_config
    from core.config import ModelConfig

    assert proxy_model_config(ModelConfig(width=2), 2).width == 4
    assert proxy_model_config(ModelConfig(arch="resnet18"), 1).arch == "resnet18"
    with pytest.raises(ValueError, match="needs arch small_cnn"):
        proxy_model_config(ModelConfig(arch="resnet18"), 2)
    with pytest.raises(ValueError, match="proxy_width must be >= 1"):
        proxy_model_config(ModelConfig(), 0)
