"""What each Ray task asks for: GPUs when the cluster has them and the device allows, and its
memory, estimated from the dataset's size and the factors' size, so Ray neither hides the GPUs (a task that asks for
none gets CUDA_VISIBLE_DEVICES="" and trains on the CPU) nor packs more tasks onto a node than
its memory holds.

Memory of a task (bytes), the parts that grow with the data (n examples of S x S pixels, n_train
and n_val in the splits, d = trak.proj_dim, T = trak.n_models):
  BASE                  a worker with torch and a small model loaded (the studies' peak_mb
                        column: 1.06-1.30 GB on the sample, BENCHMARKS.md)
  2 n S^2 3             the decoded images (uint8) and the float batches made from them
  F = T (4 (n_train + n_val) d + 8 d^2) + 8 (T d)^2
                        an analysis's factored scores (core/attribution/factors.py): per member
                        Φ (train x d), Q (val x d) and ΦᵀΦ, and H over all members. An analysis
                        task holds 3 F (the memory-mapped files, their bytes packed to travel
                        back, and the serialised copy); a method task 2 F (the analysis it is
                        sent, and its files); a member task 2 F at T = 1 without H
"""
from __future__ import annotations

import os

import ray
import torch

from core.config import AnalysisConfig
from core.data.dataset import Dataset
from core.studies.cluster import ClusterError, nodes

GIB = 1024 ** 3
BASE = int(1.3 * GIB)


def images_bytes(n: int, image_size: int) -> int:
    return n * image_size * image_size * 3


def factors_bytes(n_train: int, n_val: int, proj_dim: int, n_models: int, joint: bool = True) -> int:
    """The bytes of an analysis's factors (`joint`: with H over all members)."""
    members = n_models * (4 * (n_train + n_val) * proj_dim + 8 * proj_dim * proj_dim)
    return members + (8 * (n_models * proj_dim) ** 2 if joint else 0)


def task_memory(kind: str, n: int, n_train: int, n_val: int, image_size: int, proj_dim: int,
                n_models: int) -> int:
    """Estimated peak bytes of one task: kind "analysis", "member" or "method"."""
    images = 2 * images_bytes(n, image_size)
    if kind == "analysis":
        return BASE + images + 3 * factors_bytes(n_train, n_val, proj_dim, n_models)
    if kind == "member":
        return BASE + images + 2 * factors_bytes(n_train, n_val, proj_dim, 1, joint=False)
    if kind == "method":
        return BASE + images + 2 * factors_bytes(n_train, n_val, proj_dim, n_models)
    raise ValueError(f"unknown task kind {kind!r}: analysis, member or method")


def gpus_per_task(device: str, cluster_gpus: float, fraction: float | None = None) -> float:
    """GPUs a task asks Ray for: `fraction` (default 1) when the device is auto or cuda and
    the cluster has GPUs; none for device cpu or a cluster without GPUs (device cuda there is
    refused before anything runs)."""
    share = 1.0 if fraction is None else float(fraction)
    if not 0 < share <= max(1.0, cluster_gpus):
        raise ValueError(f"gpus per task must be in (0, {max(1.0, cluster_gpus):g}], got {fraction!r}")
    if device == "cpu":
        return 0.0
    if cluster_gpus <= 0:
        if device == "cuda":
            raise ValueError("device 'cuda' was asked for but the Ray cluster has no GPU (`ray status` lists "
                             "its resources); use device = \"auto\" or \"cpu\"")
        return 0.0
    return share


def task_options(kind: str, cfg: AnalysisConfig, data: Dataset, fraction: float | None = None) -> dict:
    """Ray options of one task of `kind` on `data`: num_gpus and memory, checked against the
    cluster (no node with that much memory: ClusterError naming the need)."""
    live = nodes()
    n_train, n_val = len(data.idx("train")), len(data.idx("val"))
    memory = task_memory(kind, len(data.split), n_train, n_val, cfg.data.image_size, cfg.trak.proj_dim,
                         cfg.trak.n_models)
    largest = max((n.memory for n in live), default=0.0)
    if memory > largest:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ClusterError(f"{article} {kind} task on {data.root} needs about {memory / GIB:.1f} GB (n = {len(data.split)}, "
                           f"{n_train} train x {n_val} val, {cfg.data.image_size} px) but the largest Ray node offers "
                           f"{largest / GIB:.1f} GB to tasks; add a larger node or lower the image size")
    gpus = gpus_per_task(cfg.train.device, sum(n.gpus for n in live), fraction)
    return {"num_gpus": gpus, "memory": memory}


def assigned_gpus() -> float | None:
    """The GPUs Ray gave the task this runs in (None in a driver or outside Ray)."""
    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    return ray.get_runtime_context().get_assigned_resources().get("GPU") or None


def check_gpu() -> None:
    """Inside a Ray task: refuse, in one line, to go on when Ray gave this task a GPU and torch
    sees none (a node that advertises GPUs it cannot use, or torch without CUDA), instead of
    silently training on the CPU."""
    asked = assigned_gpus()
    if asked and not torch.cuda.is_available():
        node = ray.get_runtime_context().get_node_id()
        raise RuntimeError(f"this task asked for {asked:g} GPU and Ray placed it on node {node[:12]}, "
                           f"but none is visible to torch there (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}, torch CUDA build {torch.version.cuda}); "
                           "run with device = \"cpu\" or fix that node's GPU setup")
