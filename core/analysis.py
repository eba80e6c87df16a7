"""The analysis job: ERM model, TRAK ensemble, and the selections every page reads.

Artifacts of an analysis run (beside its config.json):
  erm/model.pt, metrics.json (ERM val/test metrics, step budget, timings)
  erm_logits_val.npy, erm_logits_test.npy, train_ids.npy, val_ids.npy, test_ids.npy
  ensemble/model_<t>.pt, ensemble/subset_<t>.npy, ensemble/features_<t>/ (feature store)
  scores.npy   (val x train, τ averaged over the T models; memory-mapped)
  alignment.npy (D3M, true validation groups), auto.json + auto_*.npy (Auto-D3M)
  subpopulations.csv
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from core import jobs, selection
from core.attribution.trak import model_scores, proxy_model_config
from core.checkpoints import save_checkpoint
from core.config import AnalysisConfig, from_dict, to_dict
from core.io import write_csv_atomic
from core.dataset import Dataset, load_dataset
from core.metrics import group_metrics
from core.models import pick_device
from core.progress import Reporter, scaled
from core.runs import Run, RunStore
from core.training import cross_entropy_np, fit, predict_logits


TARGET = "core.analysis:run_analysis"


def create_analysis_run(store: RunStore, cfg: AnalysisConfig) -> Run:
    """A queued analysis run for `cfg` (start it with jobs.start(run, TARGET))."""
    return store.create("analysis", to_dict(cfg), label=f"{Path(cfg.data.root).name}, T={cfg.trak.n_models}")


def start_analysis(store: RunStore, cfg: AnalysisConfig, *, reuse: bool = True, inline: bool = False,
                   target: str = TARGET) -> Run:
    """The one way to get an analysis for `cfg` (CLI, pages, benchmarks, studies).

    With `reuse`, a finished analysis with exactly this config is returned as it is, and one
    still running is returned to be followed (a restart or a second click loses nothing and
    starts nothing twice). Otherwise a new run is created and started: as a background job, or
    in this process with `inline` (it has finished, or raised, when this returns). `target`
    may name core.studies.members.TARGET: the same analysis with its members as Ray tasks.
    """
    if reuse:
        found = store.find_done("analysis", to_dict(cfg)) or store.find_active("analysis", to_dict(cfg))
        if found is not None:
            return found
    run = create_analysis_run(store, cfg)
    if inline:
        jobs.run_inline(run, target)
    else:
        jobs.start(run, target)
    return run


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
    """Job target: ERM, the T-model TRAK ensemble, then D3M/Auto-D3M/subpopulation tables."""
    cfg = from_dict(AnalysisConfig, run.config())
    device = pick_device(cfg.train.device)
    data = load_run_dataset(cfg, run, report)
    train_idx, val_idx = data.idx("train"), data.idx("val")
    for split in ("train", "val", "test"):
        run.write_array(f"{split}_ids", data.idx(split))
    timings = {}
    erm = fit(data, train_idx, cfg, cfg.train, device, scaled(report, "ERM "))
    save_checkpoint(run.file("erm/model.pt"), erm.model, cfg)
    ev = evaluate(erm.model, data, device)
    for split in ("val", "test"):
        run.write_array(f"erm_logits_{split}", ev.pop(f"logits_{split}"))
    timings["erm_train"] = erm.seconds
    scores = ensemble_scores(run, data, cfg, device, report, timings, members)
    write_selections(run, data, scores, run.read_array("erm_logits_val"))
    epochs_done = erm.steps / math.ceil(len(train_idx) / cfg.train.batch_size)
    run.write_json("metrics", {**ev, "steps": erm.steps, "epoch_seconds": erm.seconds / epochs_done,
                               "timings": timings, "device": str(device)})


@dataclass(frozen=True)
class Member:
    """One ensemble member to train and featurize: its index, subset (positions in train) and seed."""

    t: int
    subset: np.ndarray
    seed: int


@dataclass
class MemberResult:
    t: int
    model: torch.nn.Module
    scores: np.ndarray  # τ of this member alone (val x train)
    train_seconds: float
    featurize_seconds: float


# Runs members elsewhere (core/studies/members.py: as Ray tasks) and yields their results in order t.
MemberRunner = Callable[[Dataset, AnalysisConfig, AnalysisConfig, list[Member]], Iterator[MemberResult]]


def ensemble_scores(run: Run, data: Dataset, cfg: AnalysisConfig, device: torch.device,
                    report: Reporter, timings: dict, members: MemberRunner | None = None) -> np.ndarray:
    """τ averaged over T models, each trained on a random `subset_fraction` of train
    (with trak.proxy_width > 1: narrower proxy models of the configured architecture).
    Members train here one after the other, or through `members` (the same numbers)."""
    train_idx, val_idx = data.idx("train"), data.idx("val")
    t_cfg = cfg.trak
    out = np.lib.format.open_memmap(run.file("scores.npy"), mode="w+", dtype=np.float32,
                                    shape=(len(val_idx), len(train_idx)))
    rng = np.random.default_rng(cfg.train.seed)
    member_cfg = replace(cfg, model=proxy_model_config(cfg.model, t_cfg.proxy_width))
    n_sub = max(1, round(t_cfg.subset_fraction * len(train_idx)))
    todo = [Member(t, np.sort(rng.choice(len(train_idx), n_sub, replace=False)), cfg.train.seed * 1000 + t + 1)
            for t in range(t_cfg.n_models)]
    timings.update(ensemble_train=0.0, featurize=0.0)
    for member in todo:
        run.write_array(f"ensemble/subset_{member.t}", member.subset)
    if members is not None:
        for result in members(data, cfg, member_cfg, todo):
            save_checkpoint(run.file(f"ensemble/model_{result.t}.pt"), result.model, member_cfg)
            out += (1.0 / t_cfg.n_models) * result.scores
            timings["ensemble_train"] += result.train_seconds
            timings["featurize"] += result.featurize_seconds
            report("ensemble members", result.t + 1, t_cfg.n_models)
        out.flush()
        return run.read_array("scores")
    for member in todo:
        prefix = f"model {member.t + 1}/{t_cfg.n_models}: "
        trained = fit(data, train_idx[member.subset], member_cfg, replace(cfg.train, seed=member.seed), device,
                      scaled(report, prefix))
        save_checkpoint(run.file(f"ensemble/model_{member.t}.pt"), trained.model, member_cfg)
        timings["ensemble_train"] += trained.seconds
        start = time.perf_counter()
        model_scores(trained.model, data.images, data.labels, train_idx, val_idx, t_cfg, member.seed, device,
                     run.file(f"ensemble/features_{member.t}"), out, weight=1.0 / t_cfg.n_models,
                     model_id=f"{run.id}/model_{member.t}", report=scaled(report, prefix))
        timings["featurize"] += time.perf_counter() - start
    out.flush()
    return run.read_array("scores")


def write_selections(run: Run, data: Dataset, scores: np.ndarray, val_logits: np.ndarray,
                     beta: float = 1.0, fraction: float = 0.35) -> None:
    """D3M alignment on true groups, Auto-D3M pseudo-groups and alignment, subpopulations."""
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
