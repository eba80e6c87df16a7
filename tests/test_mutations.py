"""The mutation check: every plausible wrong version of a core formula is caught.

Each mutation replaces the one function the formula lives in (patched wherever it was
imported, or the method's entry in the registry) by a wrong version, mostly a wrapper that
calls the real function with one thing changed. Then the property checks that guard the
formula (the same functions the regular tests call) must raise AssertionError, and must
actually have called the mutated function. TESTING.md (at the repository root) lists the
mutations and the tests that catch each; a mutation no test catches is a missing test.
"""
from __future__ import annotations

import importlib
import shutil
import math
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from core.attribution.factors import open_scores
from core.pipeline.analysis import evaluate, load_run_dataset, write_selections
from core.train.checkpoints import load_checkpoint
from core.config import AnalysisConfig, from_dict
from core.methods import METHODS, MethodContext
from core.progress import silent
from core.runs.store import Run, RunStore
from core.data.images import to_tensor
from tests.methods import test_baselines as baselines
from tests.methods import test_seed_methods as seed
from tests.train import test_metrics as metrics
from tests.pipeline import test_pipeline as pipeline
from tests.methods import test_selection as sel
from tests.attribution import test_factored as factored
from tests.attribution import test_trak_lr as trak_lr
from tests.views import test_distributions as dists


@dataclass
class Env:
    """What the checks that need an analysis get: a context on the session's tiny analysis."""

    ctx: MethodContext
    tmp: Path


@pytest.fixture(scope="module")
def env(tiny_analysis: Run, tmp_path_factory: pytest.TempPathFactory) -> Env:
    cfg = from_dict(AnalysisConfig, tiny_analysis.config())
    data = load_run_dataset(cfg, tiny_analysis, silent)
    return Env(MethodContext(data, tiny_analysis, cfg, torch.device("cpu"), silent),
               tmp_path_factory.mktemp("mutations"))


def rewritten_selections(env: Env) -> Run:
    """A copy of the analysis whose selections (D3M, Auto-D3M) are written again by the job's
    own step, `write_selections`, from its stored scores and validation logits."""
    source = env.ctx.analysis
    run = RunStore(Path(tempfile.mkdtemp(dir=env.tmp))).create("analysis", source.config())
    for name in ("erm_logits_val", "val_ids", "train_ids"):
        run.write_array(name, np.asarray(source.read_array(name)))
    shutil.copytree(source.file("ensemble"), run.file("ensemble"), ignore=shutil.ignore_patterns("*.pt"))
    write_selections(run, env.ctx.data, open_scores(run.path), run.read_array("erm_logits_val"))
    return run


def evaluated_again(env: Env) -> None:
    """The analysis job's evaluation of its ERM model, run again, against the independent metrics."""
    model = load_checkpoint(env.ctx.analysis.file("erm/model.pt"))
    pipeline.check_test_metrics(env.ctx.analysis, evaluate(model, env.ctx.data, env.ctx.device)["test"])


def with_result(real: Callable, key: str, value: Callable[[dict], float]) -> Callable:
    """group_metrics with one entry of its result replaced by value(result)."""
    def wrong(*args, **kwargs):
        out = real(*args, **kwargs)
        return {**out, key: value(out)}
    return wrong


def control_of_d3m_with_given_k(env: Env) -> None:
    store, run = pipeline.debias(env.ctx.analysis, "d3m", k=13)
    pipeline.check_random_control(store, run)


def refit_every_layer(dfr: Callable) -> Callable:
    """DFR followed by a few full-network gradient steps on validation: every layer refitted."""
    def wrong(ctx: MethodContext, params: dict):
        result = dfr(ctx, params)
        model = result.model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = to_tensor(ctx.data.images[ctx.val_idx]), torch.as_tensor(ctx.data.labels[ctx.val_idx])
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return replace(result, model=model.eval())
    return wrong


def train_ids_for_fitting(real: Callable) -> Callable:
    """val_fit_select whose fitting part is training examples (as many), the selection part kept."""
    def wrong(ctx, fraction, seed_):
        fit, select = real(ctx, fraction, seed_)
        return ctx.train_idx[:len(fit)], select
    return wrong


def pissa_keeping_the_base(real: Callable) -> Callable:
    """PiSSA's adapters set from the SVD, but the base weight left whole (W + BA at the start)."""
    def wrong(layer):
        base = layer.get_base_layer()
        kept = base.weight.data.clone()
        real(layer)
        base.weight.data = kept
    return wrong


def linear_update(q: torch.Tensor, group_loss: torch.Tensor, eta: float) -> torch.Tensor:
    q = q + eta * group_loss
    return q / q.sum()


def log_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)


Check = Callable[[Env], None]
TRAK_EXACT = ("test_trak_lr::test_trak_equals_the_linear_formula",
              lambda env: trak_lr.check_trak_equals_linear_formula())
TRAK_SOFTMAX = ("test_trak_lr::test_trak_equals_the_softmax_regression_formula",
                lambda env: trak_lr.check_trak_equals_softmax_regression_formula())
TRAK_LOO = ("test_trak_lr::test_trak_predicts_leave_one_out_and_wrong_formulas_do_not",
            lambda env: trak_lr.check_trak_predicts_leave_one_out())
EQ3_HAND = ("test_selection::test_alignment_matches_hand_computed_equation_3",
            lambda env: sel.check_alignment_hand_case())
STORED = ("test_pipeline::test_analysis_artifacts (on selections rewritten by the job's step)",
          lambda env: pipeline.check_stored_selections(rewritten_selections(env)))
METRICS = ("test_metrics::test_group_metrics_by_hand", lambda env: metrics.check_group_metrics_by_hand())
STORED_METRICS = ("test_pipeline::test_analysis_artifacts (the ERM model evaluated again by the job's step)",
                  evaluated_again)
PLANTED = ("test_selection::test_pseudo_groups_recover_a_planted_component",
           lambda env: sel.check_planted_component(1.0))
PRODUCTS = ("test_factored::test_every_product_equals_the_dense_matrix[eigh]",
            lambda env: factored.check_products(Path(tempfile.mkdtemp(dir=env.tmp)), singular=True))
FACTORED = ("test_factored::test_factored_selections_equal_the_dense_computation[binary]",
            lambda env: factored.check_factored_equals_dense(env.ctx.analysis, env.ctx.data))


@dataclass(frozen=True)
class Mutation:
    key: str  # the test id
    name: str
    where: str  # "module.function", or "method:<name>" for a registered method's function
    wrong: Callable[[Callable], Callable]  # the real function -> the wrong one
    catches: tuple[tuple[str, Check], ...]  # (test, its property check)


MUTATIONS = [
    Mutation("trak-no-inverse", "TRAK without (ΦᵀΦ)⁻¹", "core.attribution.scorer.solve",
             lambda real: lambda chol, targets: np.asarray(targets, np.float64), (TRAK_EXACT, TRAK_SOFTMAX, TRAK_LOO)),
    Mutation("trak-no-residual", "TRAK without (1 - p_i)", "core.attribution.scorer.score_chunks",
             lambda real: lambda q, chunks, p, out, weight=1.0: real(q, chunks, np.zeros_like(p), out, weight),
             (TRAK_EXACT, TRAK_SOFTMAX, TRAK_LOO)),
    Mutation("margin-log-p", "margin replaced by log p (the loss)", "core.attribution.gradients.margin",
             lambda real: log_probability, (TRAK_EXACT, TRAK_SOFTMAX)),
    Mutation("beta-sign", "β sign flipped in equation 3", "core.methods.selection.alignment",
             lambda real: lambda scores, groups, losses, beta=1.0: real(scores, groups, losses, -beta),
             (EQ3_HAND, STORED)),
    Mutation("plain-mean", "softmax weights replaced by a plain mean", "core.methods.selection.alignment",
             lambda real: lambda scores, groups, losses, beta=1.0: real(scores, groups, losses, 0.0),
             (EQ3_HAND, STORED)),
    Mutation("group-loss-sum", "group losses ℓ_g summed instead of averaged", "core.methods.selection.group_losses",
             lambda real: lambda logits, labels, groups, n_groups: (real(logits, labels, groups, n_groups)
                                                                    * np.bincount(groups, minlength=n_groups)),
             (("test_selection::test_group_losses_are_mean_cross_entropy_per_group",
               lambda env: sel.check_group_losses()), STORED)),
    Mutation("most-positive", "most positive A_i removed instead of most negative", "core.methods.selection.most_negative",
             lambda real: lambda align, k: real(-np.asarray(align), k),
             (("test_selection::test_k_rules", lambda env: sel.check_k_rules()),)),
    Mutation("split-50", "Auto-D3M split at 50% instead of 35%", "core.methods.selection.pseudo_groups",
             lambda real: lambda scores, labels, losses, class_names, fraction=0.35: real(scores, labels, losses,
                                                                                          class_names, 0.5),
             (PLANTED, STORED)),
    Mutation("wrong-pole", "lower-performing pole assigned the wrong side", "core.methods.selection.pseudo_groups",
             lambda real: lambda scores, labels, losses, class_names, fraction=0.35: real(scores, labels, -losses,
                                                                                          class_names, fraction),
             (PLANTED, ("test_selection::test_pseudo_groups_recover_a_planted_component[-1.0]",
                        lambda env: sel.check_planted_component(-1.0)), STORED)),
    Mutation("pca-uncentred", "factored PCA without centring", "core.attribution.factored.centred",
             lambda real: lambda block, mean: block, (PRODUCTS, FACTORED)),
    Mutation("group-mean-wrong-rows", "group mean of Q taken over the wrong rows",
             "core.attribution.factored.group_rows_mean",
             lambda real: lambda q, groups, n_groups: real(q, np.roll(groups, 1), n_groups), (PRODUCTS, FACTORED, STORED)),
    Mutation("b-no-residual", "B without the (1 - p) factor", "core.attribution.factored.residual_rows",
             lambda real: lambda phi, p: real(phi, np.zeros_like(p)), (PRODUCTS, FACTORED, STORED)),
    Mutation("wga-mean", "worst-group accuracy as the mean of the group accuracies", "core.train.metrics.group_metrics",
             lambda real: with_result(real, "wga", lambda out: float(np.mean(list(out["per_group"].values())))),
             (METRICS, STORED_METRICS)),
    Mutation("balanced-acc-plain", "balanced accuracy as plain accuracy", "core.train.metrics.group_metrics",
             lambda real: with_result(real, "balanced_acc", lambda out: out["acc"]), (METRICS,)),
    Mutation("groupdro-linear", "GroupDRO linear update q + η ℓ", "core.methods.groupdro.exponentiated_step",
             lambda real: linear_update,
             (("test_baselines::test_groupdro_weights_follow_the_exponentiated_update",
               lambda env: baselines.check_groupdro_two_steps()),)),
    Mutation("subg-largest", "SUBG subsampled to the largest group (nothing dropped)",
             "core.methods.subg.balanced_subsample",
             lambda real: lambda groups, n_groups, rng, names=None: np.arange(len(groups)),
             (("test_baselines::test_group_balancing_weights_by_hand", lambda env: baselines.check_subg_counts()),
              ("test_baselines::test_subg_equalises_group_counts",
               lambda env: baselines.check_subg_keeps_the_smallest_group_size(env.ctx)))),
    Mutation("rwg-uniform", "RWG weights uniform (group balance not applied)", "core.methods.rwg.group_balanced_probs",
             lambda real: lambda groups: np.full(len(groups), 1.0 / len(groups)),
             (("test_baselines::test_group_balancing_weights_by_hand", lambda env: baselines.check_rwg_probs()),
              ("test_baselines::test_rwg_draws_groups_equally",
               lambda env: baselines.check_rwg_draws_groups_equally(env.ctx)))),
    Mutation("jtt-no-upweight", "JTT upweight not applied", "core.methods.jtt.upsample_probs",
             lambda real: lambda errors, upweight: real(errors, 1.0),
             (("test_baselines::test_group_balancing_weights_by_hand", lambda env: baselines.check_jtt_weights()),
              ("test_baselines::test_jtt_upweights_exactly_the_first_stage_errors",
               lambda env: baselines.check_jtt_upweights_first_stage_errors(env.ctx)))),
    Mutation("dfr-every-layer", "DFR refitting every layer", "method:dfr", refit_every_layer,
             (("test_baselines::test_dfr_changes_only_the_last_layer",
               lambda env: baselines.check_dfr_changes_only_the_last_layer(env.ctx)),)),
    Mutation("histogram-unclipped", "A_i histogram binned over the full range (tails not clipped)",
             "core.views.distributions.histogram",
             lambda real: lambda values, colors, bins=40, tail=0.0: real(values, colors, bins, 0.0),
             (("test_distributions::test_clipped_histogram_counts_the_tails_in_labelled_edge_bins",
               lambda env: dists.test_clipped_histogram_counts_the_tails_in_labelled_edge_bins()),
              ("test_distributions::test_clipped_bins_make_a_heavy_tailed_distribution_readable",
               lambda env: dists.test_clipped_bins_make_a_heavy_tailed_distribution_readable()))),
    Mutation("jaccard-dice", "removal-set overlap as Dice (2 x intersection / sum of sizes), not Jaccard",
             "core.views.runs.jaccard_matrix", lambda real: lambda runs: 2 * real(runs) / (1 + real(runs)),
             (("test_distributions::test_jaccard_matrix_of_many_runs_equals_set_arithmetic",
               lambda env: dists.test_jaccard_matrix_of_many_runs_equals_set_arithmetic(
                   Path(tempfile.mkdtemp(dir=env.tmp)))),)),
    Mutation("pgd-per-batch", "PGD importance normalised per batch of 32", "core.methods.pgd.importance",
             lambda real: lambda norms: np.concatenate([real(norms[i:i + 32]) for i in range(0, len(norms), 32)])
             / math.ceil(len(norms) / 32),
             (("test_seed_methods::test_pgd_weights_are_normalised_ce_gradient_norms",
               lambda env: seed.check_pgd_importance()),)),
    Mutation("pgd-fresh-debiased", "PGD debiased model from a fresh initialisation", "core.methods.pgd.debiased_model",
             lambda real: lambda ctx, biased, params, **hooks: real(ctx, biased, {**params, "init": "fresh"}, **hooks),
             (("test_seed_methods::test_pgd_debiased_model_starts_from_the_biased_model",
               lambda env: seed.check_pgd_starts_from_the_biased_model(env.ctx)),)),
    Mutation("ffw-train-split", "FFW gates and bias head trained on the training split",
             "core.methods.frozen.val_fit_select",
             train_ids_for_fitting,
             (("test_seed_methods::test_ffw_and_ba_lora_fit_on_balanced_validation",
               lambda env: seed.check_fits_on_balanced_validation(env.ctx, "ffw", seed.FAST_FFW)),)),
    Mutation("ffw-plain-sigmoid", "FFW gate σ(m/τ) instead of clamp(2σ(m/τ), 1)", "core.methods.ffw_gates.gate",
             lambda real: lambda m, tau: torch.sigmoid(m / tau),
             (("test_seed_methods::test_ffw_gates_start_at_the_erm_model",
               lambda env: seed.check_ffw_gates_start_at_the_erm_model()),)),
    Mutation("ffw-no-mi", "FFW without the mutual-information term", "core.train.losses.mutual_information",
             lambda real: lambda b, probs, n_values, eps=1e-12: 0.0 * real(b, probs, n_values, eps),
             (("test_seed_methods::test_ffw_removes_the_bias_channel_as_gamma_grows",
               lambda env: seed.check_ffw_removes_the_bias_channel()),)),
    Mutation("ba-lora-consistency-sign", "BA-LoRA consistency sign flipped", "core.train.losses.consistency",
             lambda real: lambda adapted, base, kind="mse": -real(adapted, base, kind),
             (("test_seed_methods::test_each_regulariser_moves_its_quantity",
               lambda env: seed.check_regularisers_move_their_quantities()),
              ("test_seed_methods::test_ba_lora_loss_is_ce_plus_the_official_terms_and_lambda_zero_drops_a_term",
               lambda env: seed.check_ba_lora_loss_by_hand()))),
    Mutation("ba-lora-no-residual", "BA-LoRA PiSSA without the residual in the base weights",
             "core.methods.ba_lora.pissa_init", pissa_keeping_the_base,
             (("test_seed_methods::test_pissa_init_reproduces_the_base_model",
               lambda env: seed.check_pissa_reproduces_the_base_model()),)),
    Mutation("control-k", "random control drawing a different k", "method:random",
             lambda real: lambda ctx, params: real(ctx, {**params, "k": params["k"] + 1}),
             (("test_pipeline::test_d3m_removes_most_negative_and_gets_a_random_control",
               control_of_d3m_with_given_k),)),
]


def apply(monkeypatch: pytest.MonkeyPatch, mutation: Mutation) -> list[int]:
    """Patch the wrong version in everywhere the real one is reachable; return a call counter."""
    calls = [0]
    if mutation.where.startswith("method:"):
        name = mutation.where.split(":", 1)[1]
        real = METHODS[name].fn
    else:
        module, name = mutation.where.rsplit(".", 1)
        real = getattr(importlib.import_module(module), name)
    wrong = mutation.wrong(real)

    def counted(*args, **kwargs):
        calls[0] += 1
        return wrong(*args, **kwargs)

    if mutation.where.startswith("method:"):
        monkeypatch.setitem(METHODS, name, replace(METHODS[name], fn=counted))
        return calls
    holders = [m for key, m in list(sys.modules.items()) if key.startswith(("core", "tests"))
               and m is not None and vars(m).get(name) is real]
    assert holders, f"{mutation.where} is not imported anywhere"
    for holder in holders:
        monkeypatch.setattr(holder, name, counted)
    return calls


def test_testing_md_lists_every_mutation():
    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    table = (root / "TESTING.md").read_text()
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ")]
    assert [m for m in MUTATIONS if m.name not in rows] == []


def test_selections_rewritten_unmutated_pass(env):
    """The rewrite used below is faithful: without a mutation the stored-selection check passes."""
    pipeline.check_stored_selections(rewritten_selections(env))


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.key)
def test_mutation_is_caught(mutation, env, monkeypatch):
    calls = apply(monkeypatch, mutation)
    for test, check in mutation.catches:
        before = calls[0]
        with pytest.raises(AssertionError):
            check(env)
        assert calls[0] > before, f"{test} never called the mutated {mutation.where}"
