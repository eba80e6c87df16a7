"""Every registered method (found through the registry, so methods added later are covered
too) runs end to end on a tiny binary dataset and on a tiny three-class one with six groups,
or refuses the dataset before anything is trained with a message naming what it needs."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from core.pipeline.analysis import load_run_dataset
from core.config import AnalysisConfig, from_dict
from core.pipeline.debias import start_debias
from core.methods import METHODS, MethodContext
from core.methods.base import MethodRefused
from core.progress import silent
from core.runs.store import Run, RunStore
from core.train.training import predict_logits
from core.train.checkpoints import load_checkpoint

DATASETS = ("binary", "multiclass")
# FFW's official schedule (up to 200 epochs of 100 gate steps, the bias head retrained to a plateau
# after each) takes minutes even on the tiny sets: here a short one; tests/test_seed_methods.py
# tests the schedule itself.
QUICK = {"ffw": {"max_gate_epochs": 3, "epoch_steps": 3, "gate_patience": 0, "head_max_epochs": 10}}


@pytest.fixture(scope="module")
def analyses(tiny_analysis, tiny_multiclass_analysis, tmp_path_factory) -> dict[str, tuple[RunStore, Run]]:
    """Private copies of the two shared analyses' work directories (the runs added here stay here)."""
    out = {}
    for name, run in zip(DATASETS, (tiny_analysis, tiny_multiclass_analysis)):
        workdir = tmp_path_factory.mktemp(f"all_methods_{name}")
        shutil.copytree(run.path.parents[1], workdir, dirs_exist_ok=True)
        store = RunStore(workdir)
        out[name] = (store, store.get(run.id))
    return out


def user_params(needs: str, analysis: Run) -> dict:
    """What a user would choose for a method that needs more than a seed (NEEDS_PARAMS)."""
    if needs == "seed":
        return {}
    if needs == "k":
        return {"k": 5}
    if needs == "flagged":
        return {"ids": analysis.read_array("train_ids")[:3].tolist()}
    if needs == "cells":
        cell = pd.read_csv(analysis.file("subpopulations.csv"), dtype={"value": str}).iloc[0]
        return {"cells": [{"attribute": cell["attribute"], "value": cell["value"], "class": cell["class"]}]}
    raise AssertionError(f"tests/test_all_methods.py does not know what a method with needs={needs!r} takes")


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_runs_end_to_end_or_refuses(analyses, dataset, name, train_calls):
    store, analysis = analyses[dataset]
    method = METHODS[name]
    cfg = from_dict(AnalysisConfig, analysis.config())
    data = load_run_dataset(cfg, analysis, silent)
    assert data.n_classes == (2 if dataset == "binary" else 3) and data.n_groups == 2 * data.n_classes
    params = {"seed": 1, **user_params(method.needs, analysis), **QUICK.get(name, {})}
    reason = method.refusal(data)
    if reason is not None:
        with pytest.raises(MethodRefused, match="cannot run on this dataset"):
            start_debias(store, analysis.id, name, params, control=False, inline=True)
        assert not train_calls
        return
    run = start_debias(store, analysis.id, name, params, control=False, inline=True)
    assert run.status()["state"] == "done"
    metrics = run.read_json("metrics")
    test_ids = analysis.read_array("test_ids")
    model = load_checkpoint(run.file("model.pt"))
    logits = predict_logits(model, data.images, test_ids, torch.device("cpu"))
    assert logits.shape == (len(test_ids), data.n_classes) and np.isfinite(logits).all()
    # the stored metrics are those of the stored model, over every group of the test split
    correct = logits.argmax(1) == data.labels[test_ids]
    per_group = {data.group_names[g]: correct[data.groups[test_ids] == g].mean() for g in range(data.n_groups)}
    assert metrics["test"]["per_group"] == pytest.approx(per_group)
    assert metrics["test"]["wga"] == pytest.approx(min(per_group.values()))
    assert metrics["test"]["acc"] == pytest.approx(correct.mean())
    removed = run.read_array("removed_ids")
    assert set(removed) <= set(analysis.read_array("train_ids")) and metrics["n_removed"] == len(removed)
    if method.needs == "k":
        assert len(removed) == 5


def test_a_method_refuses_a_dataset_before_training(analyses, train_calls):
    """SUBG on a dataset whose group has no training example: refused, naming the group."""
    _, analysis = analyses["multiclass"]
    cfg = from_dict(AnalysisConfig, analysis.config())
    data = load_run_dataset(cfg, analysis, silent)
    train = data.idx("train")
    groups = data.groups.copy()
    empty = groups[train[0]]
    groups[train[groups[train] == empty]] = (empty + 1) % data.n_groups  # group `empty` leaves train
    lacking = dataclasses.replace(data, groups=groups)
    ctx = MethodContext(lacking, analysis, cfg, torch.device("cpu"), silent)
    message = f"group {data.group_names[empty]!r} has none"
    assert message in METHODS["subg"].refusal(lacking) and METHODS["subg"].refusal(data) is None
    with pytest.raises(MethodRefused, match=f"SUBG .* cannot run on this dataset: .*{message}"):
        METHODS["subg"].run(ctx, {"seed": 0})
    assert not train_calls
    assert METHODS["rwg"].refusal(lacking) is None  # RWG balances the groups present


def test_table1_keeps_going_past_a_refusing_method(analyses, monkeypatch, capsys):
    """A method that refuses the dataset becomes a failed row with its reason; the other rows
    are printed and saved, the JSON line comes last and the exit status is 1."""
    from benchmarks.table1 import main
    from core.methods.base import Method

    erm = METHODS["erm"]
    monkeypatch.setitem(METHODS, "needs_ten", Method("needs_ten", "Ten-class method", "no/no", erm.fn, removes=False,
                                                      requires=lambda data: "it needs at least 10 classes"))
    store, analysis = analyses["binary"]
    args = ["--data", analysis.config()["data"]["root"], "--workdir", str(store.workdir), "--seeds", "0",
            "--methods", "needs_ten,erm", "--epochs", "2", "--models", "2", "--proj-dim", "256", "--device", "cpu"]
    assert main(args) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    [erm_run] = [r for r in store.list("debias") if r.config()["method"] == "erm" and r.config()["params"]["seed"] == 0
                 and r.status()["state"] == "done"]
    assert result == {"needs_ten": None, "erm": pytest.approx(100 * erm_run.read_json("metrics")["test"]["wga"], abs=0.01)}
    table = pd.read_csv(store.workdir / "table1.csv")
    failed, ok = table.iloc[0], table.iloc[1]
    assert failed["method"] == "Ten-class method" and failed["test WGA"] == "failed"
    assert failed["status"] == "failed: MethodRefused: Ten-class method cannot run on this dataset: it needs at least 10 classes"
    assert ok["method"] == "ERM" and ok["status"] == "ok" and ok["test WGA"].startswith(f"{result['erm']:.1f}")
    assert any("Ten-class method" in line and "failed" in line for line in lines[:-1])


def test_debias_benchmark_summary_keeps_the_seeds_that_ran():
    from benchmarks.debias import summarise

    results = [{"erm": 0.3, "d3m": 0.9, "auto_d3m": 0.8, "random": 0.2, "failed": {}},
               {"erm": 0.5, "auto_d3m": 0.6, "failed": {"d3m": "ValueError: boom", "random": "ValueError: boom"}}]
    summary = summarise(results)
    assert summary["erm"] == {"wga_mean": 0.4, "wga_std": round(float(np.std([0.3, 0.5], ddof=1)), 4), "seeds": 2}
    assert summary["d3m"] == {"wga_mean": 0.9, "wga_std": 0.0, "seeds": 1}
    assert summary["failed"] == {"d3m": "ValueError: boom", "random": "ValueError: boom"}
