"""Table-1 baselines (SUBG, RWG, JTT, DFR, GroupDRO) and epoch selection on a tiny analysis."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from core.runs import jobs
from core.pipeline.analysis import TARGET as ANALYSIS_TARGET, create_analysis_run, load_run_dataset
from core.train.checkpoints import load_checkpoint
from core.config import TrainConfig
from core.pipeline.debias import TARGET, create_debias_run
from core.methods import METHODS, MethodContext
from core.methods.dfr import split_halves
from core.methods.frozen import last_linear
from core.methods.groupdro import GroupDROLoss
from core.methods.jtt import upsample_probs
from core.methods.rwg import group_balanced_probs
from core.methods.subg import balanced_subsample
from core.methods.selection_by_val import EpochSelector, SELECTED_BY
from core.progress import silent
from core.runs.store import RunStore
from core.train.training import _batches, predict_logits
from tests.conftest import tiny_config
from tests.spies import recorded_training

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def analysis(tiny_sample, tmp_path_factory):
    """(store, analysis run, MethodContext) of a tiny finished analysis in a work directory of
    this module's own (its tests add runs), built once."""
    cfg = tiny_config(tiny_sample)
    store = RunStore(tmp_path_factory.mktemp("baselines"))
    run = create_analysis_run(store, cfg)
    jobs.run_inline(run, ANALYSIS_TARGET)
    ctx = MethodContext(load_run_dataset(cfg, run, silent), run, cfg, CPU, silent)
    return store, run, ctx


def check_selection(ctx: MethodContext, model: nn.Module, info: dict) -> None:
    """The returned model is the best epoch of the recorded curve (first on ties)."""
    curve = [point["val_wga"] for point in info["epoch_val_wga"]]
    assert len(curve) >= 2 and info["selected_by"] == SELECTED_BY
    assert info["selected_epoch"] == info["epoch_val_wga"][int(np.argmax(curve))]["epoch"]
    assert ctx.val_wga(model) == pytest.approx(max(curve))


def test_registered_with_table1_group_info():
    expected = {"jtt": "no/yes", "dfr": "no/yes", "rwg": "yes/yes", "subg": "yes/yes", "groupdro": "yes/yes"}
    assert {name: METHODS[name].group_info for name in expected} == expected
    assert METHODS["subg"].removes and not any(METHODS[m].removes for m in ("jtt", "dfr", "rwg", "groupdro"))


def test_epoch_selector_keeps_the_best_state():
    """A fake evaluation sequence: the selector keeps a copy of the model at its best epoch."""
    scores = iter([0.2, 0.5, 0.4, 0.5])
    selector = EpochSelector(lambda model: next(scores))
    model = nn.Linear(1, 1)
    for epoch in range(4):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        selector(epoch, model)
    assert selector.best_epoch == 2 and selector.best_score == 0.5  # the first of the tied best
    assert selector.best_state["weight"].item() == 1.0 and model.weight.item() == 3.0  # a copy
    assert [p["val_wga"] for p in selector.info()["epoch_val_wga"]] == [0.2, 0.5, 0.4, 0.5]


def check_subg_keeps_the_smallest_group_size(ctx: MethodContext) -> None:
    result = METHODS["subg"].run(ctx, {"seed": 1})
    groups = ctx.data.groups[ctx.train_idx]
    kept = np.setdiff1d(np.arange(len(groups)), result.removed)
    counts = np.bincount(groups[kept], minlength=ctx.data.n_groups)
    assert (counts == np.bincount(groups).min()).all() and counts[0] > 0
    assert result.steps == ctx.erm_steps  # same step budget on fewer examples
    check_selection(ctx, result.model, result.info)


def test_subg_equalises_group_counts(analysis):
    check_subg_keeps_the_smallest_group_size(analysis[2])


def check_subg_counts() -> None:
    """Group sizes 5, 2, 7, 3 (shuffled): two examples of each group are kept, all of the
    smallest group, each at most once."""
    groups = np.random.default_rng(0).permutation(np.repeat([0, 1, 2, 3], [5, 2, 7, 3]))
    keep = balanced_subsample(groups, 4, np.random.default_rng(1))
    assert np.bincount(groups[keep], minlength=4).tolist() == [2, 2, 2, 2]
    assert set(np.flatnonzero(groups == 1)) <= set(keep.tolist())
    assert np.array_equal(keep, np.unique(keep))


def check_rwg_probs() -> None:
    """Groups of sizes 3, 1, 2: each group gets mass 1/3, spread evenly over its members."""
    probs = group_balanced_probs(np.array([0, 2, 0, 1, 2, 0]))
    np.testing.assert_allclose(probs, [1 / 9, 1 / 6, 1 / 9, 1 / 3, 1 / 6, 1 / 9])


def check_jtt_weights() -> None:
    """Errors at positions 0 and 3, λ_up = 5: weights 5, 1, 1, 5, 1 over a total of 13."""
    probs = upsample_probs(np.array([True, False, False, True, False]), 5)
    np.testing.assert_allclose(probs, np.array([5, 1, 1, 5, 1]) / 13)


def test_group_balancing_weights_by_hand():
    check_subg_counts()
    check_rwg_probs()
    check_jtt_weights()


def test_subsample_refuses_an_empty_group():
    with pytest.raises(ValueError, match="group 'b' has no training examples"):
        balanced_subsample(np.array([0, 0, 2]), 3, np.random.default_rng(0), ["a", "b", "c"])


def check_rwg_draws_groups_equally(ctx: MethodContext) -> None:
    with recorded_training() as calls:
        result = METHODS["rwg"].run(ctx, {"seed": 0})
    (_, kwargs), = calls
    probs = kwargs["sample_probs"]
    groups = ctx.data.groups[ctx.train_idx]
    assert np.allclose(np.bincount(groups, weights=probs), 1 / ctx.data.n_groups)
    # the training loop's own sampler: every group drawn about a quarter of the time
    cfg = TrainConfig(batch_size=64, seed=0)
    drawn = np.concatenate([b for _, b in _batches(ctx.train_idx, cfg, 400, np.random.default_rng(0), probs)])
    freq = np.bincount(ctx.data.groups[drawn], minlength=ctx.data.n_groups) / len(drawn)
    assert np.allclose(freq, 1 / ctx.data.n_groups, atol=0.02)
    assert np.bincount(groups).min() / len(groups) < 0.1  # while the data itself is far from balanced
    assert len(result.removed) == 0 and result.steps == ctx.erm_steps
    check_selection(ctx, result.model, result.info)


def test_rwg_draws_groups_equally(analysis):
    check_rwg_draws_groups_equally(analysis[2])


def test_method_options_are_checked_converted_and_completed(analysis):
    store, run, _ = analysis
    assert METHODS["jtt"].resolve({"seed": 1, "upweight": "50"}) == {"seed": 1, "first_epochs": 2, "upweight": 50.0}
    assert METHODS["dfr"].resolve({"c_grid": "1, 0.1"})["c_grid"] == [1.0, 0.1]
    assert METHODS["d3m"].resolve({"k": 5}) == {"k": 5, "beta": 1.0}
    assert METHODS["erm"].resolve({"seed": "3", "lr": "1e-3"}) == {"seed": 3, "lr": 0.001}
    with pytest.raises(ValueError, match=r"jtt has no parameter 'upweigth'; its parameters: first_epochs, lr, seed"):
        METHODS["jtt"].resolve({"upweigth": 5})
    with pytest.raises(ValueError, match=r"subg has no parameter 'k'"):
        METHODS["subg"].resolve({"k": 5})
    with pytest.raises(ValueError, match=r"groupdro parameter eta='big' is not a number"):
        METHODS["groupdro"].resolve({"eta": "big"})
    with pytest.raises(ValueError, match=r"dfr parameter c_grid='1, x' is not a comma-separated list"):
        create_debias_run(store, run.id, "dfr", {"c_grid": "1, x"})
    queued = create_debias_run(store, run.id, "groupdro", {"seed": 2, "eta": "0.5"}, control=False)
    assert queued.config()["params"] == {"seed": 2, "eta": 0.5}  # the config holds every option
    store.delete(queued.id)


def check_jtt_upweights_first_stage_errors(ctx: MethodContext) -> None:
    """Stage 2 samples the stage-1 model's training errors `upweight` times more often."""
    with recorded_training() as calls:
        result = METHODS["jtt"].run(ctx, {"seed": 0, "first_epochs": 1, "upweight": 5})
    (stage1, kw1), (_, kw2) = calls
    assert kw1.get("sample_probs") is None
    errors = predict_logits(stage1, ctx.data.images, ctx.train_idx, CPU).argmax(1) != ctx.data.labels[ctx.train_idx]
    assert 0 < errors.sum() < len(errors)
    np.testing.assert_allclose(kw2["sample_probs"], np.where(errors, 5.0, 1.0) / (len(errors) + 4 * errors.sum()))
    assert result.info["n_reweighted"] == errors.sum()
    check_selection(ctx, result.model, result.info)


def test_jtt_upweights_exactly_the_first_stage_errors(analysis):
    check_jtt_upweights_first_stage_errors(analysis[2])


def check_dfr_changes_only_the_last_layer(ctx: MethodContext) -> None:
    result = METHODS["dfr"].run(ctx, {"seed": 3, "n_draws": 2})
    erm = load_checkpoint(ctx.analysis.file("erm/model.pt")).state_dict()
    new = result.model.state_dict()
    head_params = list(last_linear(result.model).parameters())
    head = {name for name, p in result.model.named_parameters() if any(p is q for q in head_params)}
    assert head == {"classifier.3.weight", "classifier.3.bias"}
    assert all(torch.equal(new[k], erm[k]) for k in erm if k not in head)
    assert all(not torch.equal(new[k], erm[k]) for k in head)
    # the folded classifier reproduces the selection score on the held-out half of validation
    info = result.info
    assert info["selected_C"] == info["c_sweep"][int(np.argmax([s["val_wga"] for s in info["c_sweep"]]))]["C"]
    _, held_out = split_halves(ctx.data.groups[ctx.val_idx], np.random.default_rng(30_003))
    idx = ctx.val_idx[held_out]
    preds = predict_logits(result.model, ctx.data.images, idx, CPU).argmax(1)
    correct = preds == ctx.data.labels[idx]
    wga = min(correct[ctx.data.groups[idx] == g].mean() for g in np.unique(ctx.data.groups[idx]))
    assert wga == pytest.approx(info["selected_val_wga"])
    assert result.steps == 0 and info["n_val_fit"] + info["n_val_select"] == len(ctx.val_idx)


def test_dfr_changes_only_the_last_layer(analysis):
    check_dfr_changes_only_the_last_layer(analysis[2])


def check_groupdro_two_steps() -> None:
    """q after two steps against q ∝ q · exp(η ℓ) computed by hand (3 classes, 3 groups; group 2
    is absent from the first batch, so its ℓ is 0 there)."""
    groups = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(scale=2.0, size=(8, 3)), rng.integers(0, 3, size=8)
    eta = 0.7
    loss = GroupDROLoss(groups, 3, eta)
    q = np.full(3, 1 / 3)
    for batch in (np.array([0, 1, 2]), np.array([3, 4, 5, 7])):
        log_p = logits[batch] - np.log(np.exp(logits[batch]).sum(1, keepdims=True))
        ce = -log_p[np.arange(len(batch)), labels[batch]]
        ell = np.array([ce[groups[batch] == g].mean() if (groups[batch] == g).any() else 0.0 for g in range(3)])
        q = q * np.exp(eta * ell)
        q = q / q.sum()
        total = loss(torch.tensor(logits[batch], dtype=torch.float32), torch.tensor(labels[batch]), batch)
        np.testing.assert_allclose(loss.q.numpy(), q, rtol=1e-6)
        assert total.item() == pytest.approx(float(q @ ell), rel=1e-5)


def test_groupdro_weights_follow_the_exponentiated_update():
    check_groupdro_two_steps()


def test_groupdro_weights_move_toward_the_worst_group(analysis):
    """On the ERM model's fixed training logits, q orders the groups by their loss."""
    _, run, ctx = analysis
    idx = ctx.train_idx
    logits = torch.as_tensor(predict_logits(load_checkpoint(run.file("erm/model.pt")), ctx.data.images, idx, CPU))
    y = torch.as_tensor(ctx.data.labels[idx])
    loss = GroupDROLoss(ctx.data.groups, ctx.data.n_groups, eta=0.5)
    group_loss = loss.group_losses(logits, y, idx).numpy()
    for _ in range(5):
        total = loss(logits, y, idx)
    q = loss.q.numpy()
    assert np.argmax(q) == np.argmax(group_loss) and q.max() > 1 / ctx.data.n_groups
    assert np.array_equal(np.argsort(q), np.argsort(group_loss))
    assert total.item() == pytest.approx(float(q @ group_loss), rel=1e-5)


def test_groupdro_run_records_weights_and_selection(analysis):
    _, _, ctx = analysis
    result = METHODS["groupdro"].run(ctx, {"seed": 0, "eta": 0.1})
    weights = result.info["final_group_weights"]
    assert set(weights) == set(ctx.data.group_names) and sum(weights.values()) == pytest.approx(1.0)
    assert max(weights.values()) > 1 / ctx.data.n_groups
    check_selection(ctx, result.model, result.info)


@pytest.mark.parametrize("method", ["subg", "dfr"])
def test_debias_job_records_method_and_selection(analysis, method):
    store, run, ctx = analysis
    params = {"seed": 0, "n_draws": 1} if method == "dfr" else {"seed": 0}
    child = create_debias_run(store, run.id, method, params, control=False)
    jobs.run_inline(child, TARGET)
    metrics = child.read_json("metrics")
    assert metrics["group_info"] == METHODS[method].group_info and metrics["info"]["selected_by"]
    assert metrics["n_removed"] == (len(ctx.train_idx) - 4 * np.bincount(ctx.data.groups[ctx.train_idx]).min()
                                    if method == "subg" else 0)


def test_table1_benchmark_reuses_the_analysis_and_its_runs(analysis, capsys):
    from benchmarks.table1 import main

    store, run, _ = analysis
    args = ["--data", run.config()["data"]["root"], "--workdir", str(store.workdir), "--seeds", "0,1",
            "--methods", "erm,dfr", "--epochs", "2", "--models", "2", "--proj-dim", "256", "--device", "cpu"]
    assert main(args) == 0
    assert len(store.list("analysis")) == 1  # the fixture's analysis, reused
    runs = {r.id for r in store.list("debias")}
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"erm", "dfr"}
    wgas = [100 * r.read_json("metrics")["test"]["wga"] for r in store.list("debias")
            if r.config()["method"] == "dfr" and r.config()["params"]["n_draws"] == 10]
    assert result["dfr"] == pytest.approx(np.mean(wgas), abs=0.01)
    assert any(line.startswith("DFR") or " DFR" in line for line in lines)
    assert main(args) == 0 and {r.id for r in store.list("debias")} == runs  # nothing rerun
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
