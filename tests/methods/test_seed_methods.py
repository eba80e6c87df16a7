"""PGD, FFW and BA-LoRA (the seed documents' methods) on tiny models and tiny analyses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from core import cli

from core.runs import jobs
from core.pipeline.analysis import TARGET as ANALYSIS_TARGET, create_analysis_run, load_run_dataset
from core.train.checkpoints import load_checkpoint
from core.data.dataset import Dataset
from core.pipeline.debias import TARGET, create_debias_run
from core.train.losses import consistency, gce, svd_share
from core.methods import METHODS, MethodContext
from core.methods.ba_lora import BALoRALoss, fit_adapters
from core.methods.ffw import GatedModel, bias_attribute, gate
from core.methods.pgd import ce_grad_norms, importance
from core.train.models import SmallCNN
from core.progress import silent
from core.runs.store import RunStore
from core.data.images import to_tensor
from tests.conftest import tiny_config

CPU = torch.device("cpu")
SEED_METHODS = ("pgd", "ffw", "ba_lora")


def make_context(root: Path, store_dir: Path, **settings):
    cfg = tiny_config(root, **settings)
    store = RunStore(store_dir)
    run = create_analysis_run(store, cfg)
    jobs.run_inline(run, ANALYSIS_TARGET)
    return store, run, MethodContext(load_run_dataset(cfg, run, silent), run, cfg, CPU, silent)


@pytest.fixture(scope="module")
def analysis(tiny_sample, tmp_path_factory):
    """(store, analysis, MethodContext) of a tiny binary analysis this module may add runs to."""
    return make_context(tiny_sample, tmp_path_factory.mktemp("seed_methods"))


def three_class_sample(root: Path, seed: int = 0) -> Path:
    """3 classes x 2 places = 6 groups (place agrees with class // 2 mostly in train): a square
    of the class's colour on the place's background."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    colours = [(220, 40, 40), (40, 200, 40), (240, 240, 240)]
    rows = []
    for split, n in (("train", 240), ("val", 72), ("test", 72)):
        for i in range(n):
            label = i % 3
            place = (label % 2 if rng.random() < 0.85 else 1 - label % 2) if split == "train" else (i // 3) % 2
            img = np.full((16, 16, 3), (60, 90, 170) if place else (100, 120, 60), np.uint8)
            y0, x0 = rng.integers(2, 8, 2)
            img[y0:y0 + 6, x0:x0 + 6] = colours[label]
            name = f"images/{split}_{i}.png"
            Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)).save(root / name)
            rows.append({"filename": name, "label": f"c{label}", "split": split,
                         "group": f"c{label} on {'water' if place else 'land'}",
                         "place": "water" if place else "land", "noise": str(rng.integers(0, 2))})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


# --- PGD ------------------------------------------------------------------------------------

def hand_norms(model, images, labels, names, norm):
    """Per example: the cross-entropy gradient by autograd over the named parameters, its norm."""
    params = dict(model.named_parameters())
    x, y = to_tensor(images), torch.as_tensor(labels)
    out = []
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        flat = torch.cat([g.flatten() for g in torch.autograd.grad(loss, [params[n] for n in names])])
        out.append(float(flat.norm(p={"l1": 1, "l2": 2, "linf": float("inf")}[norm])))
    return np.array(out)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
@pytest.mark.parametrize("scope", ["fc", "all"])
def test_pgd_weights_are_normalised_ce_gradient_norms(norm, scope):
    torch.manual_seed(0)
    model = SmallCNN(3, image_size=8).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 10)
    names = ["classifier.3.weight", "classifier.3.bias"] if scope == "fc" else [n for n, _ in model.named_parameters()]
    expected = hand_norms(model, images, labels, names, norm)
    norms, _ = ce_grad_norms(model, images, labels, np.arange(10), CPU, scope, norm, batch_size=4)
    assert np.allclose(norms, expected, rtol=1e-4)
    h = importance(norms)
    assert np.allclose(h, expected / expected.sum(), rtol=1e-4) and h.sum() == pytest.approx(1.0)


def test_pgd_samples_by_the_biased_models_gradient_norms(analysis, train_calls):
    _, _, ctx = analysis
    result = METHODS["pgd"].run(ctx, {"seed": 0, "biased_width": 0.25})
    (biased, kw1), (debiased, kw2) = train_calls
    logits, y = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    assert kw1["loss_fn"](logits, y, None) == pytest.approx(float(gce(logits, y, 0.7)))  # step 1: GCE
    assert biased.features[0].out_channels == 4 and debiased.features[0].out_channels == 16  # quarter width
    norms, _ = ce_grad_norms(biased, ctx.data.images, ctx.data.labels, ctx.train_idx, CPU, "fc", "l2")
    assert np.allclose(kw2["sample_probs"], importance(norms))
    assert result.steps == ctx.erm_steps and len(result.removed) == 0
    assert result.info["step2_seconds"] > 0 and "step2_peak_memory_mb" in result.info
    assert result.info["selected_by"] == "validation worst-group accuracy"


def test_pgd_reweight_mode_weights_the_loss(analysis, train_calls):
    _, _, ctx = analysis
    METHODS["pgd"].run(ctx, {"seed": 0, "mode": "reweight", "norm": "l1"})
    (biased, _), (_, kw2) = train_calls
    assert "sample_probs" not in kw2
    h = importance(ce_grad_norms(biased, ctx.data.images, ctx.data.labels, ctx.train_idx, CPU, "fc", "l1")[0])
    ids = ctx.train_idx[:6]
    logits, y = torch.randn(6, 2), torch.as_tensor(ctx.data.labels[ids])
    expected = (torch.as_tensor(h[:6] * len(h), dtype=torch.float32) * F.cross_entropy(logits, y, reduction="none")).mean()
    assert float(kw2["loss_fn"](logits, y, ids)) == pytest.approx(float(expected), rel=1e-5)


def test_pgd_refuses_bad_options_before_training(analysis, train_calls):
    _, _, ctx = analysis
    with pytest.raises(ValueError, match="pgd parameter biased_width=0.3 is not allowed: one of 1, 0.5, 0.25$"):
        METHODS["pgd"].run(ctx, {"biased_width": 0.3})
    with pytest.raises(ValueError, match="pgd parameter mode='both' is not allowed: one of resample, reweight$"):
        METHODS["pgd"].run(ctx, {"mode": "both"})
    with pytest.raises(ValueError, match="pgd parameter grad_scope='last' is not allowed: one of fc, all$"):
        METHODS["pgd"].run(ctx, {"grad_scope": "last"})
    assert not train_calls


# --- FFW ------------------------------------------------------------------------------------

def frame_dataset(meta: pd.DataFrame, groups: np.ndarray) -> Dataset:
    labels = pd.factorize(meta["label"], sort=True)[0]
    attrs = [c for c in meta.columns if c not in ("filename", "label", "split", "group")]
    return Dataset(Path("/data/x"), meta, np.zeros((len(meta), 1, 1, 3), np.uint8), labels, ["a", "b"],
                   groups, [str(g) for g in np.unique(groups)], meta["split"].to_numpy(), attrs)


def test_ffw_bias_attribute_is_the_one_forming_the_groups():
    meta = pd.DataFrame({"filename": list("abcdef"), "label": ["a", "a", "b", "b", "a", "b"], "split": ["train"] * 6,
                         "size": ["s", "l", "s", "l", "l", "s"], "place": ["x", "y", "x", "y", "x", "y"]})
    groups = np.array([0, 1, 2, 3, 0, 3])  # (label, place)
    data = frame_dataset(meta.assign(group=groups.astype(str)), groups)
    name, values, names = bias_attribute(data, None)
    assert name == "place" and names == ["x", "y"] and values.tolist() == [0, 1, 0, 1, 0, 1]
    assert bias_attribute(data, "size")[0] == "size"  # the group attribute wins
    with pytest.raises(ValueError, match=r"no `group` column and no --group-attribute was given \(attributes: size, place\)"):
        bias_attribute(frame_dataset(meta, np.zeros(6, np.int64)), None)
    with pytest.raises(ValueError, match="no attribute of /data/x forms the `group` column with the label"):
        bias_attribute(frame_dataset(meta.assign(group=list("pqrstu")), np.arange(6)), None)


def test_gates_go_to_zero_or_one_as_the_temperature_falls():
    torch.manual_seed(0)
    gated = GatedModel(SmallCNN(2, image_size=8), "unstructured", 0.0, 1.0)
    with torch.no_grad():
        for m in gated.m:
            m.normal_()
    shares = []
    for tau in (1.0, 0.1, 0.01, 0.001):
        gated.tau = tau
        shares.append(gated.undecided())
    assert shares == sorted(shares, reverse=True) and shares[0] > 0.5 and shares[-1] < 0.01
    m = torch.cat([p.flatten() for p in gated.m])
    assert torch.equal(gate(m[m.abs() > 0.01], 1e-4), (m[m.abs() > 0.01] > 0).float())


def erm_params(ctx):
    return dict(load_checkpoint(ctx.analysis.file("erm/model.pt")).named_parameters())


PRUNE_HARD = {"seed": 0, "gamma": 20.0, "gate_init": 0.05, "gate_lr": 0.2, "gate_epochs": 2}


def test_ffw_only_zeroes_weights(analysis):
    _, _, ctx = analysis
    result = METHODS["ffw"].run(ctx, PRUNE_HARD)
    before, info = erm_params(ctx), result.info
    zeroed = 0
    for name, p in result.model.named_parameters():
        same, zero = p.detach() == before[name], p.detach() == 0
        assert bool((same | zero).all()), name  # never changed except by zeroing
        if name.endswith("weight") and not name.startswith("classifier.3"):
            assert float((zero & ~same).float().mean()) == pytest.approx(info["sparsity_per_layer"][name[:-7]], abs=1e-6)
            zeroed += int((zero & ~same).sum())
    assert zeroed > 0 and info["sparsity"] > 0
    assert torch.equal(result.model.classifier[3].weight, before["classifier.3.weight"])  # C untouched
    assert result.steps == 0 and info["bias_attribute"] == "place"
    for key in ("bias_head_val_acc_before", "bias_head_val_acc_after", "bias_head_val_acc_after_retrained"):
        assert 0 <= info[key] <= 1
    taus = [row["tau"] for row in info["temperature_schedule"]]
    assert taus == sorted(taus, reverse=True) and taus[-1] == pytest.approx(0.01)


def test_ffw_structured_pruning_zeroes_whole_channels(analysis):
    _, _, ctx = analysis
    result = METHODS["ffw"].run(ctx, {**PRUNE_HARD, "structure": "structured"})
    before = erm_params(ctx)
    pruned_channels = 0
    for layer in ("features.0", "features.3", "classifier.1"):
        w, b = result.model.get_parameter(f"{layer}.weight"), result.model.get_parameter(f"{layer}.bias")
        w0, b0 = before[f"{layer}.weight"], before[f"{layer}.bias"]
        for c in range(w.shape[0]):
            if torch.equal(w[c], w0[c]):
                assert b[c] == b0[c]
            else:  # a pruned channel: all its weights and its bias
                assert bool((w[c] == 0).all()) and b[c] == 0
                pruned_channels += 1
    assert pruned_channels > 0


# --- BA-LoRA --------------------------------------------------------------------------------

def test_ba_lora_trains_only_adapters(analysis):
    _, _, ctx = analysis
    params = METHODS["ba_lora"].resolve({"seed": 0, "steps": 12, "batch_size": 32, "lr": 0.01})
    model, steps, info = fit_adapters(ctx, params)
    before = erm_params(ctx)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and steps == 12
    base_layers = {n.replace("peft.base_model.model.", "").replace(".base_layer", ""): p
                   for n, p in model.named_parameters() if "lora_" not in n}
    assert set(base_layers) == set(before)
    for name, p in base_layers.items():
        assert torch.equal(p, before[name]), name  # base weights bit-identical
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(bool(p.abs().sum() > 0) for p in lora_b)  # the adapters moved from B = 0
    merged = model.merged()
    assert any(not torch.equal(p, before[n]) for n, p in merged.named_parameters())
    assert set(dict(merged.named_parameters())) == set(before)  # the plain architecture again
    assert info["trainable_params"] < info["total_params"]


def test_ba_lora_lambda_zero_drops_its_term():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, 3, generator=g)
    logits, y, ids = torch.randn(4, 3, generator=g), torch.tensor([0, 2, 1, 1]), np.array([1, 3, 5, 7])
    loss = BALoRALoss(base, 1.0, 0.0, 0.5, 1)
    assert set(loss.terms(logits, ids)) == {"consistency", "svd"}
    expected = F.cross_entropy(logits, y) + consistency(logits, base[ids]) + 0.5 * svd_share(logits, 1)
    assert float(loss(logits, y, ids)) == pytest.approx(float(expected))
    assert float(BALoRALoss(base, 0.0, 0.0, 0.0, 1)(logits, y, ids)) == pytest.approx(float(F.cross_entropy(logits, y)))


# --- every seed method on a multi-class dataset and through the CLI --------------------------

def test_seed_methods_on_three_classes(tmp_path_factory):
    root = three_class_sample(tmp_path_factory.mktemp("three") / "data")
    store, analysis, ctx = make_context(root, tmp_path_factory.mktemp("three_work"), image_size=16)
    assert ctx.data.n_classes == 3 and ctx.data.n_groups == 6
    for name, params in (("pgd", {"grad_scope": "all"}), ("ffw", {"gate_epochs": 1}), ("ba_lora", {"steps": 8})):
        run = create_debias_run(store, analysis.id, name, {"seed": 0, **params})
        jobs.run_inline(run, TARGET)
        metrics = run.read_json("metrics")
        assert metrics["method"] == name and 0 <= metrics["test"]["macro_f1"] <= 1
        assert len(metrics["test"]["per_group"]) == 6
        model = load_checkpoint(run.file("model.pt"))
        assert model.classifier[3].out_features == 3
    assert run.read_json("metrics")["info"]["lambda_svd"] == 0.1


def test_seed_methods_through_the_cli(analysis, capsys):
    """`d3m methods` lists their options; `d3m debias --method NAME --param ...` runs each (the
    CLI in this process, the run as the background job it starts)."""
    store, run, _ = analysis
    cli.main(["methods"])
    listing = capsys.readouterr().out
    lines = [line.split()[:2] for line in listing.splitlines() if line.startswith("    ")]
    for shown in (["q=0.7", "a"], ["norm=l2", "one"], ["biased_width=1.0", "one"], ["structure=unstructured", "one"],
                  ["gamma=1.0", "a"], ["rank=8", "a"], ["alpha=16.0", "a"]):
        assert shown in lines, shown
    for name, param in (("pgd", "norm=linf"), ("ffw", "gate_epochs=1"), ("ba-lora", "steps=5")):
        cli.main(["debias", "--analysis", run.id, "--workdir", str(store.workdir), "--method", name, "--param", param])
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        config = store.get(out["run_id"]).config()
        assert config["method"] == name.replace("-", "_") and out["random"] is None  # not a removal: no control
        key, value = param.split("=")
        assert str(config["params"][key]) == value
        assert set(out["debiased"]) >= {"test_wga", "test_macro_f1"}
