"""PGD, FFW and BA-LoRA (the seed documents' methods) on tiny models and tiny analyses."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from core import cli
from core.data.dataset import Dataset
from core.data.images import to_tensor
from core.methods import METHODS, MethodContext
from core.methods import ba_lora as ba_lora_module
from core.methods import ffw as ffw_module
from core.methods.ba_lora import BALoRALoss, fit_adapters, warmup_cosine, with_adapters
from core.methods.ffw import bias_attribute, learn_gates
from core.methods.ffw_gates import GatedModel, gate
from core.methods.frozen import penultimate, val_fit_select
from core.methods.pgd import ce_grad_norms, importance
from core.methods.pgd_report import signatures
from core.pipeline.analysis import TARGET as ANALYSIS_TARGET
from core.pipeline.analysis import create_analysis_run, load_run_dataset
from core.pipeline.debias import TARGET, create_debias_run
from core.progress import silent
from core.runs import jobs
from core.runs.store import RunStore
from core.train import training
from core.train.checkpoints import load_checkpoint
from core.train.losses import gce, svd_share
from core.train.models import SmallCNN
from core.train.training import predict_logits
from sample_data.make_sample import CLASSES, COLOUR_SET, generate
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


def check_pgd_importance(norm: str = "l2", scope: str = "fc") -> None:
    """h = the per-example cross-entropy gradient norms (autograd, one example at a time; fc: the
    final layer's weight only, as the official code hooks it) over their sum on the whole set."""
    torch.manual_seed(0)
    model = SmallCNN(3, image_size=8).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 70)
    names = ["classifier.3.weight"] if scope == "fc" else [n for n, _ in model.named_parameters()]
    expected = hand_norms(model, images, labels, names, norm)
    norms, _ = ce_grad_norms(model, images, labels, np.arange(70), CPU, scope, norm, batch_size=32)
    assert np.allclose(norms, expected, rtol=1e-4)
    h = importance(norms)
    assert np.allclose(h, expected / expected.sum(), rtol=1e-4) and h.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
@pytest.mark.parametrize("scope", ["fc", "all"])
def test_pgd_weights_are_normalised_ce_gradient_norms(norm, scope):
    check_pgd_importance(norm, scope)


def conflicting(data) -> np.ndarray:
    """Per example, from metadata.csv alone: True when its colour is not its class's own colour."""
    meta = data.metadata
    return (meta["label"].map(CLASSES.index) != meta["colour"].map(list(COLOUR_SET).index)).to_numpy()


@pytest.fixture(scope="module")
def many_valued(tmp_path_factory):
    """(store, analysis, ctx) of a tiny many-valued-bias set: 3 shapes, 3 colours, 5% conflicting."""
    root = tmp_path_factory.mktemp("many_valued") / "data"
    generate(root, seed=0, scale=0.1, n_classes=3, bias_values=3, conflict=0.05)
    return make_context(root, tmp_path_factory.mktemp("many_valued_work"), image_size=16, epochs=6)


def test_pgd_puts_its_sampling_mass_on_the_conflicting_examples(many_valued, train_calls):
    """The papers' setting: the GCE model learns the colour, and the conflicting examples (5% of
    train, each in a random other colour) get at least 10x their share of the sampling mass."""
    _, _, ctx = many_valued
    result = METHODS["pgd"].run(ctx, {"seed": 0})
    (_, _), (_, kw) = train_calls
    h, is_conf = kw["sample_probs"], conflicting(ctx.data)[ctx.train_idx]
    assert 0.02 < is_conf.mean() < 0.1
    assert h[is_conf].sum() >= 10 * is_conf.mean()
    assert result.info["conflicting_mass"] == pytest.approx(h[is_conf].sum())  # its majority groups are the own colours
    assert result.info["effective_sample_size"] == pytest.approx(1 / float((h ** 2).sum()))
    assert result.info["effective_sample_size"] < len(h) / 2
    assert signatures(result.info) == []


def per_group_val(ctx, model) -> dict:
    logits = predict_logits(model, ctx.data.images, ctx.val_idx, CPU)
    correct = logits.argmax(1) == ctx.data.labels[ctx.val_idx]
    groups = ctx.data.groups[ctx.val_idx]
    return {ctx.data.group_names[g]: float(correct[groups == g].mean()) for g in np.unique(groups)}


@pytest.fixture(scope="module")
def binary16(tmp_path_factory):
    """(store, analysis, ctx) of the tiny binary sample at 16 px trained long enough (6 epochs)
    for the GCE model to learn the place."""
    root = tmp_path_factory.mktemp("binary16") / "data"
    generate(root, seed=0, scale=0.1)
    return make_context(root, tmp_path_factory.mktemp("binary16_work"), image_size=16, epochs=6)


def test_pgd_on_a_two_valued_bias_shows_the_reversed_shortcut(binary16):
    """With two places every minority example carries the other place: resampling toward them
    teaches the reversed shortcut, and the signature says so (validation accuracies by hand)."""
    _, _, ctx = binary16
    result = METHODS["pgd"].run(ctx, {"seed": 0})
    acc = per_group_val(ctx, result.model)
    minority = [g for g in acc if g in ("landbird on water", "waterbird on land")]
    majority = [g for g in acc if g not in minority]
    assert set(result.info["majority_groups"]) == set(majority)
    assert np.mean([acc[g] for g in minority]) - np.mean([acc[g] for g in majority]) > 0.3
    assert result.info["val_acc_minority_groups"] == pytest.approx(np.mean([acc[g] for g in minority]))
    [message] = signatures(result.info)
    assert message.startswith("reversed shortcut")


def check_pgd_starts_from_the_biased_model(ctx) -> None:
    """Step 3 starts from the biased model's weights (official learner.py:346): the model the
    second training call receives equals the first call's trained model, before any step."""
    seen = []
    real = training.train

    def spy(model, *args, **kwargs):
        seen.append((model, copy.deepcopy(model.state_dict())))
        return real(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "train", spy)
        METHODS["pgd"].run(ctx, {"seed": 0})
    (biased, _), (debiased, start) = seen
    assert debiased is not biased
    end_of_biased = biased.state_dict()
    assert all(torch.equal(start[k], end_of_biased[k]) for k in end_of_biased)


def test_pgd_debiased_model_starts_from_the_biased_model(analysis):
    check_pgd_starts_from_the_biased_model(analysis[2])


def test_pgd_reweight_mode_weights_the_loss(analysis, train_calls):
    _, _, ctx = analysis
    METHODS["pgd"].run(ctx, {"seed": 0, "mode": "reweight", "norm": "l1", "init": "fresh"})
    (biased, _), (_, kw2) = train_calls
    assert "sample_probs" not in kw2
    h = importance(ce_grad_norms(biased, ctx.data.images, ctx.data.labels, ctx.train_idx, CPU, "fc", "l1")[0])
    ids = ctx.train_idx[:6]
    logits, y = torch.randn(6, 2), torch.as_tensor(ctx.data.labels[ids])
    expected = (torch.as_tensor(h[:6] * len(h), dtype=torch.float32) * F.cross_entropy(logits, y, reduction="none")).mean()
    assert float(kw2["loss_fn"](logits, y, ids)) == pytest.approx(float(expected), rel=1e-5)


def test_pgd_biased_model_is_gce_and_narrow_when_asked(analysis, train_calls):
    _, _, ctx = analysis
    result = METHODS["pgd"].run(ctx, {"seed": 0, "biased_width": 0.25})
    (biased, kw1), (debiased, _) = train_calls
    logits, y = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    assert kw1["loss_fn"](logits, y, None) == pytest.approx(float(gce(logits, y, 0.7)))  # step 1: GCE
    assert biased.features[0].out_channels == 4 and debiased.features[0].out_channels == 16  # quarter width
    assert result.info["debiased_init"].startswith("a fresh initialisation")  # a narrower model cannot seed it
    assert result.steps == ctx.erm_steps and result.info["step2_seconds"] > 0


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

def frame_dataset(meta: pd.DataFrame, groups: np.ndarray, images: np.ndarray | None = None) -> Dataset:
    labels = pd.factorize(meta["label"], sort=True)[0]
    attrs = [c for c in meta.columns if c not in ("filename", "label", "split", "group")]
    images = np.zeros((len(meta), 1, 1, 3), np.uint8) if images is None else images
    return Dataset(Path("/data/x"), meta, images, labels, ["a", "b"],
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


def check_ffw_gates_start_at_the_erm_model() -> None:
    """m = 0 and clamp(2σ(m/τ), 1) = 1: before any gate step the gated model is the ERM model,
    output for output; and as τ → 0 a gate is 1[m >= 0]."""
    torch.manual_seed(0)
    base = SmallCNN(3, image_size=8).eval()
    x = to_tensor(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    for structure in ("unstructured", "structured"):
        gated = GatedModel(base, structure)
        assert torch.equal(gated(x), base(x))
    m = torch.tensor([-0.3, -0.01, 0.0, 0.01, 2.0])
    assert torch.equal(gate(m, 1e-6), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert float(gate(torch.tensor(-1.0), 1.0)) == pytest.approx(2 / (1 + np.e))


def test_ffw_gates_start_at_the_erm_model():
    check_ffw_gates_start_at_the_erm_model()


def bias_channel_case(n: int = 480, seed: int = 0):
    """A validation set where y and the bias b are independent (a balanced split) and a frozen
    model whose bottleneck carries b in one channel that the classifier does not use:
    h0 = relu(x_y + 2) (the task), h1 = relu(x_b + 2) (the bias), logits = (-h0, h0 - 4) / 2."""
    rng = np.random.default_rng(seed)
    y, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    images = rng.integers(100, 156, (n, 2, 2, 3)).astype(np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = 255 * y, 255 * b  # to_tensor: 0 -> -2, 255 -> +2
    groups = 2 * y + b
    meta = pd.DataFrame({"filename": [f"{i}.png" for i in range(n)], "label": np.where(y, "b", "a"),
                         "split": "val", "group": groups.astype(str)})
    data = frame_dataset(meta, groups, images)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model[1].weight[0, 0], model[1].weight[1, 1] = 1.0, 1.0  # NCHW flattening: pixels (0,0) and (0,1) of channel 0
        model[1].bias[:] = 2.0
        model[3].weight[0, 0], model[3].weight[1, 0] = -0.5, 0.5
        model[3].bias[:] = torch.tensor([1.0, -1.0])
    return data, model.eval().requires_grad_(False), b


def retrained_bias_accuracy(model, data, fit, select, b) -> float:
    """An independent bias probe: sklearn's logistic regression on the pruned bottleneck."""
    from sklearn.linear_model import LogisticRegression
    fit_x, sel_x = penultimate(model, data.images, fit, CPU), penultimate(model, data.images, select, CPU)
    return float(LogisticRegression().fit(fit_x, b[fit]).score(sel_x, b[select]))


def check_ffw_removes_the_bias_channel() -> None:
    """On a constructed case whose bottleneck carries the bias in one unused channel, the bias
    (read by an independent probe on the pruned model) falls to chance as γ grows, while the
    task accuracy holds."""
    data, base, b = bias_channel_case()
    ctx = MethodContext(data, None, None, CPU, silent)
    fit, select = val_fit_select(ctx, 0.6, 0)
    before = retrained_bias_accuracy(base, data, fit, select, b)
    params = METHODS["ffw"].resolve({"max_gate_epochs": 6, "epoch_steps": 5, "gate_patience": 1,
                                     "min_temperature": 1e-3, "gate_lr": 0.01, "head_max_epochs": 15})
    bias_acc, task_acc = {}, {}
    for gamma in (0.0, 1.0, 10.0):
        gated, _, _ = learn_gates(ctx, copy.deepcopy(base), {**params, "gamma": gamma}, b, 2, fit, select, 0)
        pruned = gated.pruned()
        bias_acc[gamma] = retrained_bias_accuracy(pruned, data, fit, select, b)
        task_acc[gamma] = float((predict_logits(pruned, data.images, select, CPU).argmax(1)
                                 == data.labels[select]).mean())
    assert before > 0.99
    assert bias_acc[0.0] > 0.95 and bias_acc[10.0] < 0.65  # chance is 0.5
    assert bias_acc[10.0] <= bias_acc[1.0] + 0.05 and bias_acc[1.0] <= bias_acc[0.0]
    assert min(task_acc.values()) > 0.95


def test_ffw_removes_the_bias_channel_as_gamma_grows():
    check_ffw_removes_the_bias_channel()


def erm_params(ctx):
    return dict(load_checkpoint(ctx.analysis.file("erm/model.pt")).named_parameters())


FAST_FFW = {"seed": 0, "max_gate_epochs": 4, "epoch_steps": 3, "gate_patience": 0, "head_max_epochs": 20,
            "gate_lr": 0.01}


def test_ffw_only_zeroes_weights(analysis):
    _, _, ctx = analysis
    result = METHODS["ffw"].run(ctx, FAST_FFW)
    before, info = erm_params(ctx), result.info
    zeroed = 0
    for name, p in result.model.named_parameters():
        same, zero = p.detach() == before[name], p.detach() == 0
        assert bool((same | zero).all()), name  # never changed except by zeroing
        if name.endswith("bias"):
            assert bool(same.all()), name  # biases are neither gated nor pruned (unstructured)
        else:
            assert float((zero & ~same).float().mean()) == pytest.approx(info["sparsity_per_layer"][name[:-7]], abs=1e-6)
            zeroed += int((zero & ~same).sum())
    assert zeroed > 0 and info["sparsity"] > 0
    assert "classifier.3" in info["sparsity_per_layer"]  # the official code gates the classifier too
    assert result.steps == 0 and info["bias_attribute"] == "place"
    assert info["n_val_fit"] + info["n_val_select"] == len(ctx.val_idx)
    taus = [row["tau"] for row in info["temperature_schedule"]]
    assert taus == sorted(taus, reverse=True) and taus[0] == 1.0


def test_ffw_structured_pruning_zeroes_whole_channels(analysis):
    _, _, ctx = analysis
    result = METHODS["ffw"].run(ctx, {**FAST_FFW, "structure": "structured"})
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
    assert torch.equal(result.model.classifier[3].weight, before["classifier.3.weight"])


def check_fits_on_balanced_validation(ctx, method: str, params: dict) -> None:
    """FFW and BA-LoRA fit on a group-balanced part of validation and choose on the rest: the
    examples their training sees (the ids `val_fit_select` hands them) are validation examples,
    equally many per group, disjoint from the selection part."""
    seen = []
    module = {"ffw": ffw_module, "ba_lora": ba_lora_module, "lora": ba_lora_module}[method]
    real = module.val_fit_select

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "val_fit_select", spy)
        result = METHODS[method].run(ctx, params)
    [(fit, select)] = seen
    val = set(ctx.val_idx.tolist())
    assert set(fit) <= val and set(select) <= val and not set(fit) & set(select)
    counts = np.bincount(ctx.data.groups[fit], minlength=ctx.data.n_groups)
    assert counts.min() == counts.max() > 0
    assert result.info["n_val_fit"] == len(fit)


def test_ffw_and_ba_lora_fit_on_balanced_validation(analysis):
    _, _, ctx = analysis
    check_fits_on_balanced_validation(ctx, "ffw", FAST_FFW)
    check_fits_on_balanced_validation(ctx, "ba_lora", {"seed": 0, "steps": 4})


# --- BA-LoRA --------------------------------------------------------------------------------

def normalised_mse(z: np.ndarray, z0: np.ndarray) -> float:
    a = z / np.linalg.norm(z, axis=1, keepdims=True)
    b = z0 / np.linalg.norm(z0, axis=1, keepdims=True)
    return float(((a - b) ** 2).mean())


def off_diagonal(z: np.ndarray) -> float:
    cov = np.cov(z, rowvar=False)
    return float((cov ** 2).sum() - (np.diag(cov) ** 2).sum())


def top_k_share(z: np.ndarray, k: int) -> float:
    s = np.linalg.svd(z, compute_uv=False)
    return float(s[:k].sum() / s.sum())


def check_regularisers_move_their_quantities() -> None:
    """A few gradient steps on each regulariser alone (λ R) move its quantity the right way,
    measured independently with numpy: consistency lowers the distance of the normalised
    outputs to the base's, diversity the off-diagonal covariance, SVD raises the top-k share."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 6, generator=g)
    start = base + torch.randn(16, 6, generator=g)
    ids = np.arange(16)
    for name, measure, better in (("consistency", lambda z: normalised_mse(z, base.numpy()), -1),
                                  ("diversity", off_diagonal, -1), ("svd", lambda z: top_k_share(z, 2), 1)):
        lambdas = {"consistency": 0.0, "diversity": 0.0, "svd": 0.0, name: 1.0}
        loss = BALoRALoss(base, lambdas["consistency"], lambdas["diversity"], lambdas["svd"], 2)
        z = start.clone().requires_grad_(True)
        opt = torch.optim.SGD([z], lr=0.05)
        for _ in range(20):
            opt.zero_grad()
            sum(loss.lambdas[k] * v for k, v in loss.terms(z, ids).items()).backward()
            opt.step()
        assert better * (measure(z.detach().numpy()) - measure(start.numpy())) > 0, name


def test_each_regulariser_moves_its_quantity():
    check_regularisers_move_their_quantities()


def check_ba_lora_loss_by_hand() -> None:
    """The loss is CE + λ times each official term computed by hand (numpy), and a λ of 0 drops
    its term."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(10, 5, generator=g)
    logits, y, ids = torch.randn(8, 5, generator=g), torch.tensor([0, 2, 1, 1, 4, 3, 0, 2]), np.arange(1, 9)
    z, z0 = logits.numpy(), base[ids].numpy()
    cov = np.cov(z, rowvar=False)
    by_hand = {"consistency": normalised_mse(z, z0),  # official NLU: MSE of L2-normalised logits
               "diversity": off_diagonal(z) / 5,  # Σ_{i≠j} C_ij² / d
               "svd": -top_k_share(z, 3)}
    assert cov.shape == (5, 5)
    ce = float(F.cross_entropy(logits, y))
    for name, lam in (("consistency", 1e-4), ("diversity", 3e-4), ("svd", 1e-4)):
        kwargs = {"consistency": 0.0, "diversity": 0.0, "svd": 0.0, name: lam}
        loss = BALoRALoss(base, kwargs["consistency"], kwargs["diversity"], kwargs["svd"], 3)
        assert set(loss.terms(logits, ids)) == {name}
        assert float(loss(logits, y, ids)) == pytest.approx(ce + lam * by_hand[name], rel=1e-6)
    assert float(BALoRALoss(base, 0.0, 0.0, 0.0, 3)(logits, y, ids)) == pytest.approx(ce)
    assert float(svd_share(torch.randn(8, 2, generator=g), 3)) == pytest.approx(-1.0)  # k >= rank: constant


def test_ba_lora_loss_is_ce_plus_the_official_terms_and_lambda_zero_drops_a_term():
    check_ba_lora_loss_by_hand()


def check_pissa_reproduces_the_base_model() -> None:
    """PiSSA: the adapters hold the top-r singular directions and the frozen base the residual,
    so before training the adapted model's outputs are the base model's, the adapters are not
    zero, and merging gives back the original weights."""
    torch.manual_seed(0)
    base = SmallCNN(3, image_size=8).eval()
    original = {k: v.clone() for k, v in base.state_dict().items()}
    x = to_tensor(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    adapted = with_adapters(copy.deepcopy(base), 4, 4.0, "pissa")
    assert torch.allclose(adapted(x), base(x), atol=1e-5)
    for name, p in adapted.named_parameters():
        if "lora_B" in name:
            assert float(p.detach().abs().sum()) > 0, name
    residual = adapted.peft.base_model.model.features[0].base_layer.weight
    assert not torch.allclose(residual, original["features.0.weight"], atol=1e-3)  # the base holds W - BA
    merged = adapted.merged().state_dict()
    assert all(torch.allclose(merged[k], original[k], atol=1e-5) for k in original)


def test_pissa_init_reproduces_the_base_model():
    check_pissa_reproduces_the_base_model()


def test_ba_lora_trains_only_adapters(analysis):
    _, _, ctx = analysis
    params = METHODS["ba_lora"].resolve({"seed": 0, "steps": 12, "batch_size": 8, "lr": 0.01})
    model, steps, info = fit_adapters(ctx, params)
    before = erm_params(ctx)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and steps == 12
    assert not any("classifier.3" in n for n in trainable)  # the output layer is not adapted (lm_head)
    merged = model.merged()
    assert torch.equal(merged.classifier[3].weight, before["classifier.3.weight"])
    assert any(not torch.allclose(p, before[n], atol=1e-4) for n, p in merged.named_parameters())
    assert set(dict(merged.named_parameters())) == set(before)  # the plain architecture again
    assert info["trainable_params"] < info["total_params"] and 0 <= info["predictions_changed_from_base"] <= 1


def test_lora_is_ba_lora_with_every_lambda_zero(analysis, monkeypatch):
    _, _, ctx = analysis
    seen = []
    real = ba_lora_module.BALoRALoss
    monkeypatch.setattr(ba_lora_module, "BALoRALoss", lambda *a, **k: seen.append(a) or real(*a, **k))
    result = METHODS["lora"].run(ctx, {"seed": 0, "steps": 2})
    assert seen[0][1:4] == (0.0, 0.0, 0.0) and result.info["lambda_svd"] == 0.0
    assert "lambda_svd" not in METHODS["lora"].options and METHODS["ba_lora"].options["lambda_svd"].default == 1e-4


def test_warmup_cosine_is_hf_schedule():
    f = warmup_cosine(100)  # 3 warm-up steps
    assert [f(0), f(1), f(3)] == [0.0, pytest.approx(1 / 3), 1.0]
    assert f(3 + 97 // 2) == pytest.approx(0.5 * (1 + np.cos(np.pi * (97 // 2) / 97)))
    assert f(100) == pytest.approx(0.0)


# --- every seed method on a multi-class dataset and through the CLI --------------------------

def test_seed_methods_on_three_classes(tmp_path_factory):
    root = three_class_sample(tmp_path_factory.mktemp("three") / "data")
    store, analysis, ctx = make_context(root, tmp_path_factory.mktemp("three_work"), image_size=16)
    assert ctx.data.n_classes == 3 and ctx.data.n_groups == 6
    for name, params in (("pgd", {"grad_scope": "all"}), ("ffw", FAST_FFW), ("ba_lora", {"steps": 8}),
                         ("lora", {"steps": 4})):
        run = create_debias_run(store, analysis.id, name, {"seed": 0, **params})
        jobs.run_inline(run, TARGET)
        metrics = run.read_json("metrics")
        assert metrics["method"] == name and 0 <= metrics["test"]["macro_f1"] <= 1
        assert len(metrics["test"]["per_group"]) == 6
        model = load_checkpoint(run.file("model.pt"))
        assert model.classifier[3].out_features == 3
        if name == "ffw":
            assert metrics["info"]["bias_values"] == ["land", "water"]


def test_seed_methods_through_the_cli(analysis, capsys):
    """`d3m methods` lists their options and the data each trains on; `d3m debias --method NAME
    --param ...` runs each (the CLI in this process, the run as the background job it starts)."""
    store, run, _ = analysis
    cli.main(["methods"])
    listing = capsys.readouterr().out
    lines = [line.split()[:2] for line in listing.splitlines() if line.startswith("    ")]
    for shown in (["q=0.7", "a"], ["norm=l2", "one"], ["init=biased", "one"], ["biased_width=1.0", "one"],
                  ["structure=unstructured", "one"], ["gamma=10.0", "a"], ["rank=8", "a"], ["alpha=0.0", "a"],
                  ["lambda_consistency=0.0001", "a"]):
        assert shown in lines, shown
    heads = {line.split()[0]: line for line in listing.splitlines() if line.strip() and not line.startswith(" ")}
    assert "trains on: gates and bias head on a group-balanced 60% of validation" in heads["ffw"]
    assert "trains on: the training split" in heads["pgd"]
    fast = ["max_gate_epochs=2", "epoch_steps=2", "head_max_epochs=5"]
    for name, params in (("pgd", ["norm=linf"]), ("ffw", fast), ("ba-lora", ["steps=5"])):
        args = [a for p in params for a in ("--param", p)]
        cli.main(["debias", "--analysis", run.id, "--workdir", str(store.workdir), "--method", name, *args])
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        config = store.get(out["run_id"]).config()
        assert config["method"] == name.replace("-", "_") and out["random"] is None  # not a removal: no control
        key, value = params[0].split("=")
        assert str(config["params"][key]) == value
        assert set(out["debiased"]) >= {"test_wga", "test_macro_f1"}
