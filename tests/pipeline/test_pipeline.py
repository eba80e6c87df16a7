"""The whole engine on a tiny slice of the sample: analysis artifacts, methods, CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

from core.config import PROJECT_ROOT
from core.runs import jobs
from core.pipeline.analysis import start_analysis
from core.pipeline.debias import TARGET, create_debias_run
from core.runs.store import Run, RunStore
from core.views.summary import control_of
from tests.conftest import tiny_config
from tests.dense import dense_scores

ROOT = PROJECT_ROOT


def debias(analysis, method: str, **params):
    store = RunStore(analysis.path.parents[1])
    run = create_debias_run(store, analysis.id, method, {"seed": 0, **params})
    jobs.run_inline(run, TARGET)
    return store, run


def split_table(run: Run, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """A split's labels (class index: sorted names) and group names, read from metadata.csv."""
    meta = pd.read_csv(Path(run.config()["data"]["root"]) / "metadata.csv")
    classes = sorted(meta.label.unique())
    meta = meta.iloc[run.read_array(f"{split}_ids")]
    return meta.label.map(classes.index).to_numpy(), meta.group.to_numpy()


def check_test_metrics(run: Run, test: dict) -> None:
    """The ERM model's test metrics against the stored test logits and metadata.csv: accuracy,
    per-group accuracy, worst-group accuracy (the minimum), balanced accuracy (mean recall per
    class) and macro-F1 (mean over classes of 2TP / (2TP + FP + FN))."""
    labels, groups = split_table(run, "test")
    preds = run.read_array("erm_logits_test").argmax(1)
    correct = preds == labels
    per_group = {g: correct[groups == g].mean() for g in np.unique(groups)}
    classes = np.unique(labels)
    recall = [correct[labels == c].mean() for c in classes]
    f1 = [2 * (correct & (labels == c)).sum() / ((labels == c).sum() + (preds == c).sum()) for c in classes]
    assert test["acc"] == pytest.approx(correct.mean())
    assert test["per_group"] == pytest.approx(per_group)
    assert test["wga"] == pytest.approx(min(per_group.values())) and test["worst_group"] in per_group
    assert test["balanced_acc"] == pytest.approx(np.mean(recall))
    assert test["macro_f1"] == pytest.approx(np.mean(f1))


def equation_3(scores: np.ndarray, ce: np.ndarray, groups: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """A_i = Σ_g exp(β ℓ_g) τ(g)_i / Σ_g exp(β ℓ_g), over the groups present."""
    names = np.unique(groups)
    ell = np.array([ce[groups == g].mean() for g in names])
    tau = np.array([scores[groups == g].mean(axis=0) for g in names])
    w = np.exp(beta * ell)
    return w @ tau / w.sum()


def auto_split(scores: np.ndarray, ce: np.ndarray, labels: np.ndarray, fraction: float = 0.35) -> np.ndarray:
    """Per class: project the rows on their top principal component (SVD), take the ceil(35%)
    tail with the higher mean loss as the low side (2c), the rest as 2c + 1."""
    out = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        x = scores[rows] - scores[rows].mean(axis=0)
        proj = x @ np.linalg.svd(x, full_matrices=False)[2][0]
        n_low = int(np.ceil(fraction * len(rows)))
        bottom, top = np.argsort(proj)[:n_low], np.argsort(proj)[-n_low:]
        low = bottom if ce[rows[bottom]].mean() > ce[rows[top]].mean() else top
        out[rows] = 2 * c + 1
        out[rows[low]] = 2 * c
    return out


def check_stored_selections(run: Run) -> None:
    """alignment.npy, auto_groups.npy and auto_alignment.npy recomputed from the stored scores
    (rebuilt dense from the stored factors by tests/dense.py), validation logits and the
    labels/groups of metadata.csv."""
    scores = dense_scores(run)
    logits = run.read_array("erm_logits_val").astype(np.float64)
    labels, groups = split_table(run)
    ce = logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]
    tol = 1e-5 * np.abs(scores).max()  # the job computes the losses from float32 logits
    np.testing.assert_allclose(run.read_array("alignment"), equation_3(scores, ce, groups), rtol=1e-5, atol=tol)
    pseudo = auto_split(scores, ce, labels)
    np.testing.assert_array_equal(run.read_array("auto_groups"), pseudo)
    np.testing.assert_allclose(run.read_array("auto_alignment"), equation_3(scores, ce, pseudo), rtol=1e-5, atol=tol)


def test_analysis_artifacts(tiny_analysis):
    a = tiny_analysis
    n_train, n_val = len(a.read_array("train_ids")), len(a.read_array("val_ids"))
    assert dense_scores(a).shape == (n_val, n_train) and not a.has("scores.npy")  # factored, not dense
    check_stored_selections(a)
    check_test_metrics(a, a.read_json("metrics")["test"])
    table = pd.read_csv(a.file("subpopulations.csv"))
    assert set(table.attribute) == {"place", "size", "colour", "time", "source"}
    assert table["count"].sum() == 5 * n_train
    assert len(list(a.path.glob("ensemble/model_*.pt"))) == 2


@pytest.mark.slow
def test_selections_of_a_three_class_analysis(tiny_sample, tmp_path):
    """The same recomputation on a multi-class copy of the sample: landbirds split by size."""
    meta = pd.read_csv(tiny_sample / "metadata.csv")
    meta["label"] = np.where(meta.label == "landbird", "landbird " + meta["size"], meta.label)
    meta["group"] = meta.label + " on " + meta.place
    root = tmp_path / "three"
    shutil.copytree(tiny_sample / "images", root / "images")  # a symlink would escape the folder
    meta.to_csv(root / "metadata.csv", index=False)
    run = start_analysis(RunStore(tmp_path / "work"), tiny_config(root), inline=True)
    assert len(run.read_json("auto")["names"]) == 6
    check_stored_selections(run)
    check_test_metrics(run, run.read_json("metrics")["test"])


def check_random_control(store: RunStore, run: Run) -> None:
    """The run's random control removes as many distinct training examples, chosen at random."""
    control = control_of(store, run)
    assert control is not None and control.config()["control_of"] == run.id
    removed, random_removed = run.read_array("removed_ids"), control.read_array("removed_ids")
    assert control.read_json("metrics")["n_removed"] == len(random_removed) == len(removed)
    assert len(np.unique(random_removed)) == len(removed)
    assert set(random_removed) <= set(store.get(run.config()["analysis"]).read_array("train_ids"))
    assert set(random_removed) != set(removed)


def test_d3m_removes_most_negative_and_gets_a_random_control(tiny_analysis):
    store, run = debias(tiny_analysis, "d3m")
    align = tiny_analysis.read_array("alignment")
    k = int((align < 0).sum())
    removed = run.read_array("removed_ids")
    train_ids = tiny_analysis.read_array("train_ids")
    assert len(removed) == k and set(removed) == set(train_ids[np.argsort(align)[:k]])
    metrics = run.read_json("metrics")
    assert metrics["n_removed"] == k and metrics["steps"] == tiny_analysis.read_json("metrics")["steps"]
    assert metrics["group_info"] == "no/yes" and metrics["info"]["selected_by"].startswith("all negative")
    check_random_control(store, run)
    exported = pd.read_csv(run.file("removed.csv"))
    assert sorted(exported.id) == sorted(removed) and exported.filename.str.startswith("images/").all()


def test_k_sweep_keeps_the_best_validation_wga(tiny_analysis):
    _, run = debias(tiny_analysis, "auto_d3m", k_sweep=[0, 20])
    info = run.read_json("metrics")["info"]
    assert [p["k"] for p in info["sweep"]] == [0, 20]
    best = max(info["sweep"], key=lambda p: p["val_wga"])
    assert info["selected_k"] == best["k"] == run.read_json("metrics")["n_removed"]


def test_subpopulation_exclusion_removes_exactly_the_cell(tiny_analysis):
    _, run = debias(tiny_analysis, "subpopulations",
                    cells=[{"attribute": "source", "value": "crowd", "class": "landbird"}])
    meta = pd.read_csv(Path(tiny_analysis.config()["data"]["root"]) / "metadata.csv")
    expected = meta.index[(meta.split == "train") & (meta.source == "crowd") & (meta.label == "landbird")]
    assert sorted(run.read_array("removed_ids")) == sorted(expected)


def test_flagged_ids_must_be_training_examples(tiny_analysis):
    store = RunStore(tiny_analysis.path.parents[1])
    val_id = int(tiny_analysis.read_array("val_ids")[0])
    before = len(store.list())
    with pytest.raises(ValueError, match=rf"flagged example ids \[{val_id}\] are not training examples"):
        create_debias_run(store, tiny_analysis.id, "flagged", {"ids": [val_id]})
    assert len(store.list()) == before  # checked before any run folder is created


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def test_cli_pipeline_end_to_end_and_restart(tiny_sample, tmp_path):
    args = ["--data", str(tiny_sample), "--workdir", str(tmp_path), "--epochs", "2", "--models", "2",
            "--proj-dim", "256", "--device", "cpu"]
    out = json.loads(cli("pipeline", *args).stdout.strip().splitlines()[-1])
    for part in ("erm", "debiased", "random"):
        assert set(out[part]) >= {"test_wga", "test_acc", "test_balanced_acc", "per_group"}
        assert len(out[part]["per_group"]) == 4
    assert out["n_removed"] > 0 and out["run_id"].startswith("debias-")
    listing = cli("runs", "--workdir", str(tmp_path)).stdout
    assert out["run_id"] in listing and "random" in listing
    csv = tmp_path / "removed.csv"
    cli("export", out["run_id"], "--workdir", str(tmp_path), "--out", str(csv))
    assert len(pd.read_csv(csv)) == out["n_removed"]
    again = cli("pipeline", *args, "--method", "random", "--k", "5")
    assert "reusing analysis" in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["n_removed"] == 5
    assert len(list((tmp_path / "runs").glob("analysis-*"))) == 1


def test_cli_rejects_invalid_dataset_before_computing(tiny_sample, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = pd.read_csv(tiny_sample / "metadata.csv")
    meta.loc[3, "split"] = "training"
    meta.to_csv(bad / "metadata.csv", index=False)
    proc = cli("validate", "--data", str(bad), check=False)
    assert proc.returncode != 0 and "line 5" in proc.stdout and "'training'" in proc.stdout
    proc = cli("pipeline", "--data", str(bad), "--workdir", str(tmp_path / "wd"), "--epochs", "1", check=False)
    assert proc.returncode != 0 and "line 5" in proc.stderr and "nothing was run" in proc.stderr
    assert not list((tmp_path / "wd").glob("runs/*"))


def test_cli_method_options_listed_and_checked_before_computing(tiny_sample, tmp_path):
    listing = cli("methods").stdout
    assert "upweight=20.0" in listing and "eta=0.01" in listing and "fraction=0.35" in listing
    args = ["--data", str(tiny_sample), "--workdir", str(tmp_path), "--epochs", "1", "--method", "jtt"]
    proc = cli("pipeline", *args, "--param", "upweigth=5", check=False)
    assert proc.returncode != 0 and "jtt has no parameter 'upweigth'" in proc.stderr and "upweight" in proc.stderr
    proc = cli("pipeline", *args, "--param", "first_epochs=1.5", check=False)
    assert proc.returncode != 0 and "first_epochs='1.5' is not a whole number" in proc.stderr
    proc = cli("pipeline", *args, "--param", "upweight", check=False)
    assert proc.returncode != 0 and "expected NAME=VALUE" in proc.stderr
    proc = cli("pipeline", *args[:-2], "--k-sweep", "10,x", check=False)
    assert proc.returncode != 0 and "k sweep: 'x' is not a whole number" in proc.stderr
    assert not list(tmp_path.glob("runs/*"))
