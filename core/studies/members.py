"""One analysis's T ensemble members as Ray tasks (`d3m pipeline|analyze --members ray`).

Injected into core.pipeline.analysis.ensemble_scores (which does not know Ray): the dataset goes to the
workers once through the object store; each task trains its member (one torch thread),
computes its factors in a temporary folder and returns the state_dict and the factors (train
features Φ and p, validation Q: train x k and val x k, never val x train); the driver writes
the checkpoints, feature stores and Q's in order t, the same files as the serial loop.
"""
from __future__ import annotations

import io
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import ray
import torch

from core.pipeline import analysis
from core.pipeline.analysis import Member, MemberResult
from core.attribution.trak import model_factors
from core.config import AnalysisConfig
from core.data.dataset import Dataset
from core.train.models import build_model, pick_device
from core.progress import Reporter, silent
from core.runs.store import Run
from core.studies.resources import assigned_gpus, check_gpu, task_options
from core.studies.runner import MAX_RETRIES, connect
from core.studies.study_runs import MEMBERS_TARGET
from core.train.training import fit

TARGET = MEMBERS_TARGET


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _member(data: Dataset, cfg: AnalysisConfig, member_cfg: AnalysisConfig, member: Member) -> dict:
    torch.set_num_threads(1)
    check_gpu()
    device = pick_device(cfg.train.device)
    train_idx, val_idx = data.idx("train"), data.idx("val")
    trained = fit(data, train_idx[member.subset], member_cfg, replace(cfg.train, seed=member.seed), device, silent)
    with tempfile.TemporaryDirectory(prefix="d3m-member-") as tmp:
        t0 = time.perf_counter()
        train, q = model_factors(trained.model, data.images, data.labels, train_idx, val_idx, cfg.trak, member.seed,
                                 device, Path(tmp) / "features")
        featurize = time.perf_counter() - t0
        features = np.load(train.path)
    buf = io.BytesIO()
    torch.save(trained.model.state_dict(), buf)
    return {"t": member.t, "state_dict": buf.getvalue(), "features": features, "p": train.p, "q": q,
            "train_seconds": trained.seconds, "featurize_seconds": featurize}


def ray_members(data: Dataset, cfg: AnalysisConfig, member_cfg: AnalysisConfig,
                members: list[Member]) -> Iterator[MemberResult]:
    """Every member as a Ray task at once; results yielded in order t."""
    started = connect()
    try:
        shared = ray.put(replace(data, images=np.array(data.images)))
        options = task_options("member", cfg, data, assigned_gpus())  # a GPU share like the analysis's
        refs = [_member.options(**options).remote(shared, cfg, member_cfg, m) for m in members]
        for ref in refs:
            out = ray.get(ref)
            model = build_model(member_cfg.model, data.n_classes, cfg.data.image_size, load_weights=False)
            model.load_state_dict(torch.load(io.BytesIO(out["state_dict"]), weights_only=True))
            yield MemberResult(out["t"], model.eval(), out["features"], out["p"], out["q"], out["train_seconds"],
                               out["featurize_seconds"])
    finally:
        if started:
            ray.shutdown()


def run_analysis_on_ray(run: Run, report: Reporter) -> None:
    """Job target: core.pipeline.analysis.run_analysis with its members on Ray."""
    analysis.run_analysis(run, report, members=ray_members)
