"""The whole engine on a tiny slice of the sample: analysis artifacts, methods, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import jobs
from core.debias import TARGET, create_debias_run
from core.runs import RunStore
from core.summary import control_of

ROOT = Path(__file__).resolve().parent.parent


def debias(analysis, method: str, **params):
    store = RunStore(analysis.path.parents[1])
    run = create_debias_run(store, analysis.id, method, {"seed": 0, **params})
    jobs.run_inline(run, TARGET)
    return store, run


def test_analysis_artifacts(tiny_analysis):
    a = tiny_analysis
    n_train, n_val = len(a.read_array("train_ids")), len(a.read_array("val_ids"))
    assert a.read_array("scores").shape == (n_val, n_train)
    assert np.isfinite(a.read_array("scores")).all() and np.abs(a.read_array("scores")).sum() > 0
    assert a.read_array("alignment").shape == (n_train,)
    metrics = a.read_json("metrics")
    assert set(metrics["test"]) >= {"acc", "wga", "balanced_acc", "per_group"}
    assert metrics["test"]["wga"] <= metrics["test"]["acc"]
    groups = a.read_array("auto_groups")
    val_labels = pd.read_csv(Path(a.config()["data"]["root"]) / "metadata.csv").query("split == 'val'").label
    for c, name in enumerate(sorted(val_labels.unique())):
        in_class = (val_labels == name).to_numpy()
        assert (groups[in_class] == 2 * c).sum() == int(np.ceil(0.35 * in_class.sum()))
    table = pd.read_csv(a.file("subpopulations.csv"))
    assert set(table.attribute) == {"place", "size", "colour", "time", "source"}
    assert table["count"].sum() == 5 * n_train
    assert len(list(a.path.glob("ensemble/model_*.pt"))) == 2


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
    control = control_of(store, run)
    assert control is not None and control.read_json("metrics")["n_removed"] == k
    assert set(control.read_array("removed_ids")) <= set(train_ids)
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
