"""What each Ray task asks for: GPUs when the cluster has them and the device allows, and its
memory, estimated from the dataset's size, so Ray neither hides the GPUs (a task that asks for
none gets CUDA_VISIBLE_DEVICES="" and trains on the CPU) nor packs more tasks onto a node than
its memory holds.

Memory of a task (bytes), the parts that grow with the data (n examples of S x S pixels, n_train
and n_val in the splits, d = trak.proj_dim):
  BASE                  a worker with torch and a small model loaded (the studies' peak_mb
                        column: 1.06-1.30 GB on the sample, BENCHMARKS.md)
  2 n S^2 3             the decoded images (uint8) and the float batches made from them
  3 * 4 n_val n_train   an analysis's val x train scores: the memory-mapped file, its bytes
                        packed to travel back, and their serialised copy (method task: 2 copies)
  4 n_train d           one member's projected gradients (feature store, memory-mapped)
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


def scores_bytes(n_val: int, n_train: int) -> int:
    """What an analysis's scores hold in memory (dense float32 val x train)."""
    return 4 * n_val * n_train


def task_memory(kind: str, n: int, n_train: int, n_val: int, image_size: int, proj_dim: int) -> int:
    """Estimated peak bytes of one task: kind "analysis", "member" or "method"."""
    images = 2 * images_bytes(n, image_size)
    features = 4 * n_train * proj_dim
    if kind == "analysis":
        return BASE + images + 3 * scores_bytes(n_val, n_train) + features
    if kind == "member":
        return BASE + images + 2 * scores_bytes(n_val, n_train) + features
    if kind == "method":
        return BASE + images + 2 * scores_bytes(n_val, n_train)
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
    memory = task_memory(kind, len(data.split), n_train, n_val, cfg.data.image_size, cfg.trak.proj_dim)
    largest = max((n.memory for n in live), default=0.0)
    if memory > largest:
        raise ClusterError(f"an {kind} task on {data.root} needs about {memory / GIB:.1f} GB (n = {len(data.split)}, "
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
