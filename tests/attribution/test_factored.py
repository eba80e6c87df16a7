"""Scores kept factored (core/attribution/factored.py) equal the dense computation (issue 20).

The dense reference is never computed by the code under test: synthetic factors are
multiplied out here with numpy, an analysis's by tests/dense.py from its raw files (itself
checked against `model_scores`, the dense TRAK path, on the analysis's saved members), and the
selections are recomputed by test_pipeline's short independent equation 3 and Auto-D3M split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logsumexp

from core.attribution import export, scores as scores_module
from core.attribution.factors import FactorConfigMismatch, FactorStore, open_scores
from core.attribution.lds import lds_per_target
from core.attribution.scores import DenseScores, DenseTooLarge
from core.attribution.store import save_store
from core.attribution.trak import model_scores
from core.config import AnalysisConfig, from_dict
from core.data.dataset import Dataset
from core.methods import selection
from core.pipeline.analysis import load_run_dataset
from core.progress import silent
from core.runs.store import Run
from core.train.checkpoints import load_checkpoint
from tests.dense import dense_scores
from tests.pipeline.test_pipeline import auto_split, equation_3, split_table


def synthetic(folder: Path, n: int = 400, m: int = 60, k: int = 6, members: int = 3, singular: bool = False,
              seed: int = 0) -> np.ndarray:
    """A factor store of random members in folder/ensemble; returns S multiplied out here."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((m, n))
    for t in range(members):
        phi = rng.normal(size=(n, k)).astype(np.float32) + 0.5
        if singular:  # as scope "last" gives: output rows of a margin gradient that cancel
            phi[:, k // 2:] = -phi[:, :k // 2]
        p = rng.uniform(0.05, 0.95, n).astype(np.float32)
        q = (rng.normal(size=(m, k)) + rng.normal(size=k)).astype(np.float32)  # rows with a common mean
        save_store(folder / f"ensemble/features_{t}", {"seed": t}, phi, p)
        dense += q.astype(np.float64) @ (phi.astype(np.float64) * (1 - p.astype(np.float64))[:, None]).T / members
        np.save(folder / f"q_{t}.npy", q)
    store = FactorStore(folder / "ensemble/factors", meta(n, m, members))
    for t in range(members):
        store.save_q(t, np.load(folder / f"q_{t}.npy"))
    store.finish()
    return dense


def meta(n: int, m: int, members: int) -> dict:
    return {"n": n, "m": m, "members": [{"features": f"features_{t}", "seed": t} for t in range(members)]}


def top_component(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates, unit direction) of the centred rows' top principal component, by SVD."""
    x = rows - rows.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return u[:, 0] * s[0], vt[0]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def check_products(folder: Path, singular: bool) -> None:
    """Every product of random factors equals the same product of the matrix multiplied out."""
    want = synthetic(folder, singular=singular)
    got = open_scores(folder)
    assert got.shape == want.shape
    assert rel(got.to_dense(), want) < 1e-6
    assert rel(got.rows(np.array([3, 17])), want[[3, 17]]) < 1e-9 and rel(got.row(5), want[5]) < 1e-9
    groups = np.arange(60) % 4
    means = got.group_means(groups, 5)
    assert rel(means[:4], np.array([want[groups == g].mean(0) for g in range(4)])) < 1e-9
    assert np.isnan(means[4]).all()  # no validation example in group 4
    masks = np.random.default_rng(1).random((7, 400)) < 0.5
    assert rel(got.subset_sums(masks), masks @ want.T) < 1e-9
    # r x r Gram formed; Lanczos (float32 rows); the class's rows formed (a wide H, small rows)
    for dense_rank, direct_bytes, tol in ((got.dense_rank, 0, 1e-7), (1, 0, 1e-5), (1, got.direct_bytes, 1e-9)):
        got.dense_rank, got.direct_bytes = dense_rank, direct_bytes
        for rows in (np.arange(0, 25), np.arange(25, 60)):
            coords, direction = top_component(want[rows])
            proj = got.class_projection(rows)
            assert rel(np.abs(proj), np.abs(coords)) < tol
            assert abs(got.class_component(rows) @ direction) >= 1 - 1e-9
            assert abs(np.linalg.norm(got.class_component(rows)) - 1) < 1e-6
    export = got.export(folder / "dense.npy")
    assert rel(np.load(export), want) < 1e-6


@pytest.mark.parametrize("singular", [False, True], ids=["cholesky", "eigh"])
def test_every_product_equals_the_dense_matrix(tmp_path, singular):
    check_products(tmp_path, singular)


def test_lds_from_factors_equals_lds_from_the_matrix(tmp_path):
    want = synthetic(tmp_path)
    masks = np.random.default_rng(2).random((12, 400)) < 0.5
    margins = masks @ want.T + np.random.default_rng(3).normal(size=(12, 60))
    np.testing.assert_allclose(lds_per_target(open_scores(tmp_path), masks, margins),
                               lds_per_target(want, masks, margins), rtol=1e-9)


def test_a_dense_matrix_that_does_not_fit_is_refused_in_one_line(tmp_path, monkeypatch):
    synthetic(tmp_path)
    monkeypatch.setattr(scores_module, "available_memory", lambda: 50_000)
    with pytest.raises(DenseTooLarge) as err:
        open_scores(tmp_path).to_dense()
    assert str(err.value) == ("a dense 60 x 400 float32 score matrix needs 0.096 MB, more than the 0.05 MB "
                              "of memory available")


def test_export_writes_the_matrix_or_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    want = synthetic(tmp_path)
    assert export.main([str(tmp_path), str(tmp_path / "out" / "s.npy")]) == 0
    assert rel(np.load(tmp_path / "out" / "s.npy"), want) < 1e-6
    monkeypatch.setattr(scores_module.shutil, "disk_usage", lambda folder: type("U", (), {"free": 1000})())
    assert export.main([str(tmp_path), str(tmp_path / "out" / "t.npy")]) == 1
    assert capsys.readouterr().err == ("error: a dense 60 x 400 float32 score matrix needs 0.096 MB, more than the "
                                       f"0.001 MB of disk available in {tmp_path / 'out'}\n")


def test_factors_made_under_another_config_are_refused(tmp_path):
    synthetic(tmp_path)
    with pytest.raises(FactorConfigMismatch, match="another config"):
        FactorStore(tmp_path / "ensemble/factors", {**meta(400, 60, 3), "ridge": 0.5})


def test_an_old_scores_npy_is_read_as_before(tmp_path):
    want = synthetic(tmp_path).astype(np.float32)
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "scores.npy", want)
    scores = open_scores(old)
    assert isinstance(scores, DenseScores) and isinstance(scores.matrix, np.memmap)
    np.testing.assert_array_equal(scores.to_dense(), want)
    with pytest.raises(FileNotFoundError, match="no attribution scores"):
        open_scores(tmp_path / "nothing")


def val_losses(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cross-entropy, labels, true group names) of the validation examples, from the stored
    logits and metadata.csv."""
    labels, groups = split_table(run)
    logits = run.read_array("erm_logits_val").astype(np.float64)
    return logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels], labels, groups


def check_factored_equals_dense(run: Run, data: Dataset) -> None:
    """Alignment (true and pseudo-groups), components, pseudo-groups, removal sets and the
    subpopulation table from the factors, against the dense matrix of the same analysis."""
    dense = dense_scores(run)
    factored = open_scores(run.path)
    ce, labels, groups = val_losses(run)
    y_val, g_val = data.labels[data.idx("val")], data.groups[data.idx("val")]
    losses = selection.group_losses(run.read_array("erm_logits_val"), y_val, g_val, data.n_groups)
    align = selection.alignment(factored, g_val, losses)
    want = equation_3(dense, ce, groups)
    assert rel(align, want) < 1e-6 and rel(run.read_array("alignment"), want) < 1e-6
    for c in range(data.n_classes):
        rows = np.flatnonzero(labels == c)
        assert abs(factored.class_component(rows) @ top_component(dense[rows])[1]) >= 1 - 1e-6
    pg = selection.pseudo_groups(factored, y_val, ce, data.class_names)
    pseudo = auto_split(dense, ce, labels)
    np.testing.assert_array_equal(pg.groups, pseudo)
    np.testing.assert_array_equal(run.read_array("auto_groups"), pseudo)
    auto_losses = selection.group_losses(run.read_array("erm_logits_val"), y_val, pg.groups, len(pg.names))
    auto = selection.alignment(factored, pg.groups, auto_losses)
    auto_want = equation_3(dense, ce, pseudo)
    assert rel(auto, auto_want) < 1e-6
    for got, ref in ((align, want), (auto, auto_want)):
        for k in (int((ref < 0).sum()), 10, 50):
            np.testing.assert_array_equal(selection.most_negative(got, k), np.sort(np.argsort(ref)[:k]))
    train = data.idx("train")
    table = selection.subpopulations(align, data.labels[train], data.metadata.iloc[train], data.attributes,
                                     data.class_names)
    ref_table = pd.read_csv(run.file("subpopulations.csv"), dtype={"value": str})
    cells = ref_table.set_index(["attribute", "value", "class"]).sort_index()
    mine = table.set_index(["attribute", "value", "class"]).sort_index()
    assert mine.index.equals(cells.index) and (mine["count"] == cells["count"]).all()
    frame = pd.DataFrame({"alignment": want, "class": np.array(data.class_names)[data.labels[train]]})
    for (attr, value, cls), row in mine.iterrows():
        cell = frame[(data.metadata.iloc[train][attr].astype(str).to_numpy() == value) & (frame["class"] == cls)]
        assert row["mean_alignment"] == pytest.approx(cell.alignment.mean(), rel=1e-6, abs=1e-9 * np.abs(want).max())


@pytest.fixture(params=["binary", "multiclass"])
def analysis(request) -> tuple[Run, Dataset]:
    run = request.getfixturevalue("tiny_analysis" if request.param == "binary" else "tiny_multiclass_analysis")
    return run, load_run_dataset(from_dict(AnalysisConfig, run.config()), run, silent)


def test_factored_selections_equal_the_dense_computation(analysis):
    check_factored_equals_dense(*analysis)


def test_factors_equal_the_dense_trak_scores_of_the_saved_members(analysis, tmp_path):
    """tests/dense.py's rebuild (and to_dense) equals model_scores, the dense TRAK path, run
    again on each saved member: the factors are today's scores.npy, up to float32 rounding."""
    run, data = analysis
    cfg = from_dict(AnalysisConfig, run.config())
    want = np.zeros((len(data.idx("val")), len(data.idx("train"))), np.float32)
    for t in range(cfg.trak.n_models):
        model_scores(load_checkpoint(run.file(f"ensemble/model_{t}.pt")), data.images, data.labels, data.idx("train"),
                     data.idx("val"), cfg.trak, cfg.train.seed * 1000 + t + 1, torch.device("cpu"),
                     tmp_path / f"features_{t}", want, weight=1 / cfg.trak.n_models)
    assert rel(dense_scores(run), want) < 1e-5 and rel(open_scores(run.path).to_dense(), want) < 1e-5


def test_the_analysis_writes_no_validation_x_train_array(analysis):
    run, data = analysis
    m, n = len(data.idx("val")), len(data.idx("train"))
    shapes = {str(path.relative_to(run.path)): np.load(path, mmap_mode="r").shape for path in run.path.rglob("*.npy")}
    assert "ensemble/factors/q_0.npy" in shapes and "scores.npy" not in shapes
    assert [name for name, shape in shapes.items() if m in shape and n in shape] == []
    factors = json.loads(run.file("ensemble/factors/metadata.json").read_text())
    assert factors["complete"] and (factors["n"], factors["m"]) == (n, m)
    for member in factors["members"]:  # each names its feature store under the store's own metadata
        store = json.loads((run.path / "ensemble" / member["features"] / "metadata.json").read_text())
        assert {key: store[key] for key in member if key != "features"} == {k: v for k, v in member.items()
                                                                             if k != "features"}
