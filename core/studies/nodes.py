"""Each node's own folder, and the check that every node sees the same dataset.

A node's folder (`--node-dir`, else D3M_NODE_DIR on that node, else <tmp>/d3m-node; put it on
local disk) holds its decoded-image cache (cache/, built once per node and dataset) and the
work folders of its running tasks (tasks/<key>/: kept when a worker is lost, so that Ray's
retry, or the study started again, resumes there from the last finished stage; removed when
the task returns). A node that can read the driver's work directory (the same machine, or a
shared file system) uses the driver's image cache instead.

Before any task starts, `check_nodes` has one small task on every other node compute the
fingerprint of each dataset the study reads (core/data/fingerprint.py) and load it into that
node's cache; a node that cannot read it, or sees another copy, stops the study in one line.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from core.config import DataConfig, from_dict, to_dict
from core.data.dataset import load_dataset
from core.data.fingerprint import difference, fingerprint
from core.errors import describe
from core.studies.cluster import ClusterError, Node, nodes, this_node


def node_dir(configured: str | None = None) -> Path:
    """This node's folder for the study's caches and task folders."""
    return Path(configured or os.environ.get("D3M_NODE_DIR") or Path(tempfile.gettempdir()) / "d3m-node")


def image_cache(driver_cache: str | None, configured: str | None = None) -> Path:
    """The driver's image cache when this node can read it, else this node's own."""
    if driver_cache and Path(driver_cache).is_dir():
        return Path(driver_cache)
    return node_dir(configured) / "cache"


def inspect_node(data: list[dict], driver_cache: str | None, configured: str | None) -> list[dict]:
    """On one node: each dataset's fingerprint after loading it into the node's image cache
    ({"error": line} for one that does not load there)."""
    out = []
    for cfg in data:
        dc = from_dict(DataConfig, cfg)
        try:
            found = fingerprint(dc)
            load_dataset(dc, cache_dir=image_cache(driver_cache, configured))
            out.append({"fingerprint": found})
        except (OSError, ValueError) as exc:  # DatasetError is a ValueError
            lines = describe(exc).splitlines()  # a DatasetError: a count, then one issue a line
            out.append({"error": lines[1].lstrip("- ") if len(lines) > 1 else lines[0]})
    return out


_inspect = ray.remote(num_cpus=0, max_retries=0)(inspect_node)


def check_nodes(data: list[DataConfig], driver_cache: str | None, configured: str | None) -> list[Node]:
    """Every node that may run tasks sees each dataset as the driver does; the nodes checked.
    A single-node cluster on the driver's machine has nothing to check."""
    targets = nodes()
    if len(targets) <= 1 and all(n.id == this_node().get("id") for n in targets):
        return []
    here = [fingerprint(cfg) for cfg in data]
    payload = [to_dict(cfg) for cfg in data]
    refs = {n: _inspect.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.id, soft=False))
            .remote(payload, driver_cache, configured) for n in targets}
    for node, ref in refs.items():
        try:
            found = ray.get(ref)
        except ray.exceptions.RayError as exc:  # e.g. its runtime environment could not be set up
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterError(f"node {node.label} could not run the dataset check: {first}") from None
        for cfg, mine, theirs in zip(data, here, found):
            if "error" in theirs:
                raise ClusterError(f"node {node.label} cannot read the dataset at {cfg.root}: {theirs['error']}")
            if (diff := difference(mine, theirs["fingerprint"])) is not None:
                raise ClusterError(f"node {node.label} sees a different dataset at {cfg.root}: {diff}; "
                                   "every node needs the same copy at the same path")
    return targets
