"""The analysis job: ERM model, TRAK ensemble, and the selections every page reads.

Artifacts of an analysis run (beside its config.json):
  erm/model.pt, metrics.json (ERM val/test metrics, step budget, timings)
  erm_logits_val.npy, erm_logits_test.npy, train_ids.npy, val_ids.npy, test_ids.npy
  ensemble/model_<t>.pt, ensemble/subset_<t>.npy, ensemble/features_<t>/ (feature store)
  ensemble/factors/ (τ averaged over the T models, kept factored: core/attribution/factors.py;
      analyses made before the factors have scores.npy, val x train, instead, read as before)
  alignment.npy (D3M, true validation groups), auto.json + auto_*.npy (Auto-D3M)
  subpopulations.csv
  stages/<name>.json: completion markers (ids, erm, member_<t>, factors) a resume trusts
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from core.runs import jobs, stages

from core.methods import selection
from core.attribution.gradients import resolve_scope
from core.attribution.factors import FOLDER as FACTORS, FactorStore, open_scores
from core.attribution.scores import Scores
from core.attribution.store import save_store
from core.attribution.trak import feature_meta, model_factors, proxy_model_config
from core.train.checkpoints import load_checkpoint, save_checkpoint
from core.config import AnalysisConfig, from_dict, to_dict
from core.io import write_csv_atomic
from core.data.dataset import Dataset, load_dataset
from core.train.metrics import group_metrics
from core.train.models import pick_device
from core.pipeline.preflight import check_analysis
from core.progress import Reporter, scaled
from core.runs.store import Run, RunStore
from core.train.training import fit, predict_logits
from core.train.losses import cross_entropy_np


TARGET = "analysis"  # the job name (core/runs/names.py JOBS)


def create_analysis_run(store: RunStore, cfg: AnalysisConfig) -> Run:
    """A queued analysis run for `cfg` (start it with jobs.start(run, TARGET))."""
    return store.create("analysis", to_dict(cfg), label=f"{Path(cfg.data.root).name}, T={cfg.trak.n_models}")


def start_analysis(store: RunStore, cfg: AnalysisConfig, *, reuse: bool = True, inline: bool = False,
                   target: str = TARGET) -> Run:
    """The one way to get an analysis for `cfg` (CLI, pages, benchmarks, studies).

    With `reuse`, a finished analysis with exactly this config is returned as it is, one
    still running is returned to be followed, and one that failed, was cancelled or died is
    resumed in its folder from its last finished stage (a restart or a second click loses
    nothing and starts nothing twice). Otherwise the config and dataset are checked (every
    image decoded) before a new run is created and started: as a background job, or in this
    process with `inline`. `target` may name the job "analysis_on_ray": the same analysis
    with its members as Ray tasks (core/studies/members.py).
    """
    return jobs.get_or_start(store, "analysis", to_dict(cfg), target, lambda: create_analysis_run(store, cfg),
                             reuse=("done", "active") if reuse else (), resume=reuse,
                             check=lambda: check_analysis(cfg, store.workdir / "cache"), inline=inline)


def workdir_of(run: Run) -> Path:
    return run.path.parents[1]


def load_run_dataset(cfg: AnalysisConfig, run: Run, report: Reporter) -> Dataset:
    return load_dataset(cfg.data, cache_dir=workdir_of(run) / "cache", report=report)


def evaluate(model: torch.nn.Module, data: Dataset, device: torch.device) -> dict:
    """Val and test metrics on the dataset's true groups, plus the logits."""
    out = {}
    for split in ("val", "test"):
        idx = data.idx(split)
        logits = predict_logits(model, data.images, idx, device)
        out[split] = group_metrics(logits.argmax(1), data.labels[idx], data.groups[idx], data.group_names)
        out[f"logits_{split}"] = logits
    return out


def run_analysis(run: Run, report: Reporter, members: MemberRunner | None = None) -> None:
    """Job target: ERM, the T-model TRAK ensemble, then D3M/Auto-D3M/subpopulation tables.

    Rerun on the same folder (core.runs.jobs.resume), it skips every finished stage (ERM model,
    ensemble members, complete feature stores, scores) and gives the uninterrupted result.
    `members` runs the ensemble members elsewhere (core/studies/members.py: as Ray tasks)."""
    cfg = from_dict(AnalysisConfig, run.config())
    device = pick_device(cfg.train.device)
    data = load_run_dataset(cfg, run, report)
    write_ids(run, data)
    train_idx = data.idx("train")
    erm_model, erm_info = erm_stage(run, data, cfg, device, report)
    ev = evaluate(erm_model, data, device)
    for split in ("val", "test"):
        run.write_array(f"erm_logits_{split}", ev.pop(f"logits_{split}"))
    timings = {"erm_train": erm_info["seconds"]}
    scores = ensemble_scores(run, data, cfg, device, report, timings, members)
    start = time.perf_counter()
    report("selections (alignment, Auto-D3M, subpopulations)", 0, 1)
    write_selections(run, data, scores, run.read_array("erm_logits_val"))
    timings["selections"] = time.perf_counter() - start
    epochs_done = erm_info["steps"] / math.ceil(len(train_idx) / cfg.train.batch_size)
    run.write_json("metrics", {**ev, "steps": erm_info["steps"], "timings": timings, "device": str(device),
                               "epoch_seconds": erm_info["seconds"] / epochs_done,
                               "trak_scope": resolve_scope(cfg.trak.scope, len(train_idx), cfg.model.arch == "small_cnn")})


def write_ids(run: Run, data: Dataset) -> None:
    """The split ids; on a resume whose dataset changed meanwhile, every stage is forgotten."""
    if stages.is_done(run, "ids") and not all(
            np.array_equal(run.read_array(f"{split}_ids"), data.idx(split)) for split in ("train", "val", "test")):
        stages.forget(run, "erm", "ensemble")
    for split in ("train", "val", "test"):
        run.write_array(f"{split}_ids", data.idx(split))
    stages.mark_done(run, "ids")


def erm_stage(run: Run, data: Dataset, cfg: AnalysisConfig, device: torch.device,
              report: Reporter) -> tuple[torch.nn.Module, dict]:
    """The ERM model and {steps, seconds}: the checkpoint of a finished ERM stage is reused."""
    if stages.is_done(run, "erm"):
        report("ERM model reused", 1, 1)
        return load_checkpoint(run.file("erm/model.pt"), device), stages.info(run, "erm")
    erm = fit(data, data.idx("train"), cfg, cfg.train, device, scaled(report, "ERM "))
    save_checkpoint(run.file("erm/model.pt"), erm.model, cfg)
    details = {"steps": erm.steps, "seconds": erm.seconds}
    stages.mark_done(run, "erm", details)
    return erm.model, details


def member_subsets(cfg: AnalysisConfig, n_train: int) -> list[np.ndarray]:
    """Each member's training subset (train-split positions): one generator seeded by
    cfg.train.seed draws them in member order, so member t's subset is the same whether or
    not members before it are reused on a resume."""
    rng = np.random.default_rng(cfg.train.seed)
    n_sub = max(1, round(cfg.trak.subset_fraction * n_train))
    return [np.sort(rng.choice(n_train, n_sub, replace=False)) for _ in range(cfg.trak.n_models)]


def member_seed(cfg: AnalysisConfig, t: int) -> int:
    return cfg.train.seed * 1000 + t + 1


def member_model(run: Run, data: Dataset, cfg: AnalysisConfig, t: int, subset: np.ndarray,
                 device: torch.device, report: Reporter) -> tuple[torch.nn.Module, float]:
    """Member t trained on `subset` and its training seconds; reused once its marker exists."""
    if stages.is_done(run, f"member_{t}"):
        seconds = stages.info(run, f"member_{t}")["seconds"]
        return load_checkpoint(run.file(f"ensemble/model_{t}.pt"), device), seconds
    member = fit(data, data.idx("train")[subset], member_cfg(cfg), replace(cfg.train, seed=member_seed(cfg, t)),
                 device, report)
    save_member(run, cfg, t, subset, member.model, member.seconds)
    return member.model, member.seconds


def member_cfg(cfg: AnalysisConfig) -> AnalysisConfig:
    """The members' config: with trak.proxy_width > 1 a narrower proxy of the architecture."""
    return replace(cfg, model=proxy_model_config(cfg.model, cfg.trak.proxy_width))


def save_member(run: Run, cfg: AnalysisConfig, t: int, subset: np.ndarray, model: torch.nn.Module,
                seconds: float) -> None:
    """Member t's subset and checkpoint, then its completion marker."""
    run.write_array(f"ensemble/subset_{t}", subset)
    save_checkpoint(run.file(f"ensemble/model_{t}.pt"), model, member_cfg(cfg))
    stages.mark_done(run, f"member_{t}", {"seconds": seconds})


@dataclass(frozen=True)
class Member:
    """One ensemble member to train and featurize: its index, subset (positions in train) and seed."""

    t: int
    subset: np.ndarray
    seed: int


@dataclass
class MemberResult:
    """A member trained elsewhere: its model and its factors (train features Φ, p; val Q)."""

    t: int
    model: torch.nn.Module
    features: np.ndarray  # Φ (train x k)
    p: np.ndarray  # true-class probability per train example
    q: np.ndarray  # Q (val x k)
    train_seconds: float
    featurize_seconds: float


# Runs members elsewhere (core/studies/members.py: as Ray tasks) and yields their results in order t.
MemberRunner = Callable[[Dataset, AnalysisConfig, AnalysisConfig, list[Member]], Iterator[MemberResult]]


def ensemble_scores(run: Run, data: Dataset, cfg: AnalysisConfig, device: torch.device,
                    report: Reporter, timings: dict, members: MemberRunner | None = None) -> Scores:
    """τ averaged over T models, each trained on a random `subset_fraction` of train
    (with trak.proxy_width > 1: narrower proxy models of the configured architecture), kept
    as factors (core/attribution/factors.py): never a val x train matrix. On a resume,
    finished members are loaded and their complete feature stores and Q's reused. Members
    train here one after the other, or the unfinished ones through `members` (the same
    numbers). An analysis made before the factors keeps its scores.npy."""
    for stage in ("factors", "scores"):  # "scores": a dense scores.npy, from before the factors
        if stages.is_done(run, stage):
            timings.update(stages.info(run, stage))
            return open_scores(run.path)
    train_idx, val_idx = data.idx("train"), data.idx("val")
    n_models = cfg.trak.n_models
    small_cnn = cfg.model.arch == "small_cnn"
    trak = replace(cfg.trak, scope=resolve_scope(cfg.trak.scope, len(train_idx), small_cnn))  # as model_factors stores it
    metas = [feature_meta(trak, member_seed(cfg, t), f"{run.id}/model_{t}") for t in range(n_models)]
    store = factor_store(run, cfg, len(train_idx), len(val_idx), metas)
    times = {"ensemble_train": 0.0, "featurize": 0.0}
    subsets = member_subsets(cfg, len(train_idx))
    todo = [Member(t, subset, member_seed(cfg, t)) for t, subset in enumerate(subsets)
            if not stages.is_done(run, f"member_{t}")]
    elsewhere = members(data, cfg, member_cfg(cfg), todo) if members is not None and todo else None
    for t, subset in enumerate(subsets):
        if elsewhere is not None and not stages.is_done(run, f"member_{t}"):
            save_result(run, cfg, next(elsewhere), subset, metas[t], store, times)  # results come in order t
            report("ensemble members", t + 1, n_models)
            continue
        prefix = f"model {t + 1}/{n_models}: "
        model, seconds = member_model(run, data, cfg, t, subset, device, scaled(report, prefix))
        times["ensemble_train"] += seconds
        if store.has(t):
            continue
        start = time.perf_counter()
        _, q = model_factors(model, data.images, data.labels, train_idx, val_idx, cfg.trak, member_seed(cfg, t),
                             device, run.file(f"ensemble/features_{t}"), model_id=metas[t]["model"],
                             report=scaled(report, prefix))
        store.save_q(t, q)
        times["featurize"] += time.perf_counter() - start
    if elsewhere is not None:
        elsewhere.close()  # lets the runner release what it started (e.g. a local Ray)
    start = time.perf_counter()
    report("ensemble Gram matrix BᵀB", 0, 1)
    scores = store.finish()
    times["gram_b"] = time.perf_counter() - start
    stages.mark_done(run, "factors", times)
    timings.update(times)
    return scores


def factor_store(run: Run, cfg: AnalysisConfig, n_train: int, n_val: int, metas: list[dict]) -> FactorStore:
    """The run's factor store, under metadata naming each member's feature store and config."""
    return FactorStore(run.file(FACTORS), {"n": n_train, "m": n_val, "ridge": cfg.trak.ridge,
                                           "members": [{"features": f"features_{t}", **meta}
                                                       for t, meta in enumerate(metas)]})


def save_result(run: Run, cfg: AnalysisConfig, result: MemberResult, subset: np.ndarray, meta: dict,
                store: FactorStore, times: dict) -> None:
    """A member computed elsewhere: its feature store and Q, then its checkpoint and marker."""
    save_store(run.file(f"ensemble/features_{result.t}"), meta, result.features, result.p)
    store.save_q(result.t, result.q)
    save_member(run, cfg, result.t, subset, result.model, result.train_seconds)
    times["ensemble_train"] += result.train_seconds
    times["featurize"] += result.featurize_seconds


def write_selections(run: Run, data: Dataset, scores: Scores | np.ndarray, val_logits: np.ndarray,
                     beta: float = 1.0, fraction: float = 0.35) -> None:
    """D3M alignment on true groups, Auto-D3M pseudo-groups and alignment, subpopulations,
    from the scores' products (core/attribution/scores.py): train-sized arrays only."""
    train_idx, val_idx = data.idx("train"), data.idx("val")
    y_val, g_val = data.labels[val_idx], data.groups[val_idx]
    losses = selection.group_losses(val_logits, y_val, g_val, data.n_groups)
    align = selection.alignment(scores, g_val, losses, beta)
    run.write_array("alignment", align)
    pg = selection.pseudo_groups(scores, y_val, cross_entropy_np(val_logits, y_val), data.class_names, fraction)
    auto_losses = selection.group_losses(val_logits, y_val, pg.groups, len(pg.names))
    run.write_array("auto_groups", pg.groups)
    run.write_array("auto_projection", pg.projection)
    run.write_array("auto_alignment", selection.alignment(scores, pg.groups, auto_losses, beta))
    run.write_json("auto", {"names": pg.names, "thresholds": {str(k): v for k, v in pg.thresholds.items()},
                            "fraction": fraction, "group_losses": auto_losses.tolist(),
                            "match": selection.pseudo_group_match(pg.groups, g_val, y_val, pg.names, data.group_names)})
    run.write_json("group_losses", dict(zip(data.group_names, losses.tolist())))
    table = selection.subpopulations(align, data.labels[train_idx], data.metadata.iloc[train_idx],
                                     data.attributes, data.class_names)
    write_csv_atomic(run.file("subpopulations.csv"), table)
