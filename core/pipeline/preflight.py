"""Check before working: everything the config and the metadata can tell is checked before a
run folder is created or anything trains, each problem named in one line.

`check_analysis` checks the settings, the dataset table (columns, group attribute, files) and
decodes every image of the rows used (into the workdir's image cache, so the job that follows
opens no image again). `check_params` checks a method's options and k / k sweep / ids / cells
against the training split.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from core.attribution.trak import proxy_model_config
from core.config import AnalysisConfig, is_imagenet
from core.data.dataset import Dataset, load_dataset
from core.errors import brief
from core.methods import get_method
from core.train.archs import check_arch
from core.train.augment import AUGMENTS
from core.train.models import build_model, input_normalization
from core.train.training import OPTIMIZERS
_SCOPE = re.compile(r"^(auto|all|last|last:[1-9]\d*)$")


def check_settings(cfg: AnalysisConfig) -> None:
    """ValueError naming the first setting out of range (no file is read)."""
    positive = {"data.image_size": cfg.data.image_size, "train.epochs": cfg.train.epochs,
                "train.batch_size": cfg.train.batch_size, "trak.n_models": cfg.trak.n_models,
                "trak.proj_dim": cfg.trak.proj_dim, "trak.batch_size": cfg.trak.batch_size,
                "trak.chunk_size": cfg.trak.chunk_size}
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if cfg.train.steps is not None and cfg.train.steps < 1:
        raise ValueError(f"train.steps must be >= 1 (or unset), got {cfg.train.steps!r}")
    if not 0 < cfg.trak.subset_fraction <= 1:
        raise ValueError(f"trak.subset_fraction must be in (0, 1], got {cfg.trak.subset_fraction!r}")
    if cfg.train.lr <= 0:
        raise ValueError(f"train.lr must be > 0, got {cfg.train.lr!r}")
    check_arch(cfg.model.arch)
    input_normalization(cfg.model)  # raises on an unknown choice
    if cfg.train.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown train.optimizer {cfg.train.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if cfg.train.augment not in AUGMENTS:
        raise ValueError(f"unknown train.augment {cfg.train.augment!r}: choose one of {', '.join(AUGMENTS)}")
    if cfg.data.resize is not None and not (isinstance(cfg.data.resize, int) and cfg.data.resize >= cfg.data.image_size):
        raise ValueError(f"data.resize must be a whole number >= image_size {cfg.data.image_size} "
                         f"(the shorter side before the centre crop), got {cfg.data.resize!r}")
    if not _SCOPE.match(cfg.trak.scope):
        raise ValueError(f"unknown gradient scope {cfg.trak.scope!r}: use auto, all, last or last:N")
    if cfg.model.weights and not is_imagenet(cfg.model.weights) and not Path(cfg.model.weights).is_file():
        raise ValueError(f"weights file {cfg.model.weights} does not exist (or use --weights imagenet)")
    proxy_model_config(cfg.model, cfg.trak.proxy_width)


def check_model(cfg: AnalysisConfig) -> None:
    """Build the model with its weights (ImageNet's downloaded now when missing; a file that does
    not fit names its keys) and pass one image of the configured size through it."""
    model = build_model(cfg.model, 2, cfg.data.image_size).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, cfg.data.image_size, cfg.data.image_size))
    except Exception as exc:  # any architecture's own complaint, reported in one line
        raise ValueError(f"model {cfg.model.arch} cannot take {cfg.data.image_size} px images "
                         f"(--image-size): {brief(exc)}") from None


def check_analysis(cfg: AnalysisConfig, cache_dir: Path | None) -> Dataset:
    """The dataset, loaded: settings checked, table checked, every image decoded.

    Raises ValueError (a setting) or DatasetError (every problem of the folder, by file, line
    and column). Decoded images go to `cache_dir`, where the job finds them."""
    check_settings(cfg)
    check_model(cfg)
    data = load_dataset(cfg.data, cache_dir=cache_dir)
    if len(data.idx("train")) == 0:
        raise ValueError(f"{data.root}: the train split is empty")
    return data


def check_params(method: str, params: dict, n_train: int, train_ids: np.ndarray | None = None) -> dict:
    """The method's params resolved (unknown option or bad value: ValueError naming it), with
    k and every k of a sweep within 0..n_train - 1 and flagged ids among the training ids."""
    m = get_method(method)
    resolved = m.resolve(dict(params))
    ks = ([("k", resolved["k"])] if resolved.get("k") is not None else []) + \
         [("k sweep value", k) for k in resolved.get("k_sweep") or []]
    for name, k in ks:
        if isinstance(k, bool) or not float(k).is_integer() or not 0 <= int(k) < n_train:
            raise ValueError(f"{name} {k!r} is outside 0..{n_train - 1}: the training split has "
                             f"{n_train} examples and at least one must stay")
    if "k_sweep" in params and not resolved.get("k_sweep") and params["k_sweep"] is not None:
        raise ValueError("k sweep is empty: give at least one k (e.g. 50, 100, 200)")
    if m.needs == "flagged" and train_ids is not None:
        bad = sorted(set(int(i) for i in resolved.get("ids") or []) - set(np.asarray(train_ids).tolist()))
        if bad:
            raise ValueError(f"flagged example ids {bad[:5]} are not training examples")
    return resolved
