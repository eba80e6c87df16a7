"""Frozen configuration dataclasses, saved as JSON beside every artifact they produce.

Every stage takes one of these and nothing else that changes its result, so an artifact's
config.json is enough to reproduce it (kronfluence style).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: jobs run from here
DEFAULT_DATA = str(PROJECT_ROOT / "sample_data")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset folder to read and how to turn it into arrays."""

    root: str = DEFAULT_DATA
    image_size: int = 32
    group_attribute: str | None = None  # groups = (label, this attribute) when no `group` column
    metadata: str = "metadata.csv"  # the table's file name inside root (core/layouts.py writes others)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "small_cnn"  # small_cnn | resnet18
    width: int = 1  # channel-width divisor (small_cnn): 1 = full, 2 = half; used for proxy models
    weights: str | None = None  # local state_dict file; nothing is ever downloaded


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 12
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    steps: int | None = None  # fixed optimizer-step budget (overrides epochs when set)


@dataclass(frozen=True)
class TrakConfig:
    n_models: int = 5  # ensemble size T
    subset_fraction: float = 0.5  # each model trains on a random subset of this size
    proj_dim: int = 2048  # total feature dimension per model
    projector: str = "factored"  # factored (per-layer Kronecker) | sparse (sign sketch) | dense (reference)
    scope: str = "auto"  # auto (resolve_scope: last below 10,000 train examples, else last:3) | last | last:N | all
    ridge: float = 1e-3  # relative ridge: lambda = ridge * trace(PhiT Phi) / k
    batch_size: int = 128
    chunk_size: int = 4096  # rows (train or target) per streamed chunk: bounds peak memory
    proxy_width: int = 1  # ensemble members use channel width / proxy_width (2 = half); small_cnn only


@dataclass(frozen=True)
class D3MConfig:
    beta: float = 1.0  # equation 3 temperature
    k: int | None = None  # None: remove every example with A_i < 0
    k_sweep: tuple[int, ...] = ()  # when given: retrain for each k, keep the best val WGA
    minority_fraction: float = 0.35  # Auto-D3M: size of the lower-performing side per class


@dataclass(frozen=True)
class AnalysisConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trak: TrakConfig = field(default_factory=TrakConfig)


def analysis_config(data_root: str | Path = DEFAULT_DATA, group_attribute: str | None = None,
                    **settings: Any) -> AnalysisConfig:
    """AnalysisConfig defaults with the given settings, for the CLI, the dashboard and tests.

    Each setting names a field of one section (image_size, arch, weights, epochs, seed,
    device, n_models, proj_dim, projector, scope, ...); None keeps the default. A name found in
    two sections (batch_size) sets the first: data, model, train, then trak.
    """
    base = AnalysisConfig()
    sections = {name: {} for name in _SECTIONS}
    for key, value in settings.items():
        owner = next((name for name, cls in _SECTIONS.items()
                      if key in {f.name for f in dataclasses.fields(cls)}), None)
        if owner is None:
            raise ValueError(f"unknown analysis setting {key!r}")
        if value is not None:
            sections[owner][key] = value
    data = dataclasses.replace(base.data, root=str(Path(data_root).resolve()),
                               group_attribute=group_attribute or None, **sections["data"])
    return AnalysisConfig(data=data, **{name: dataclasses.replace(getattr(base, name), **sections[name])
                                        for name in ("model", "train", "trak")})


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict) -> T:
    """Rebuild a (nested) config dataclass; unknown keys are an error, not silently dropped."""
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, value in data.items():
        sub = _SUBCONFIGS.get((cls.__name__, name))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value)
        elif isinstance(value, list) and "tuple" in str(hints[name]):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def save_config(cfg: Any, path: Path) -> None:
    from core.io import write_json_atomic

    write_json_atomic(path, {"type": type(cfg).__name__, **to_dict(cfg)})


def load_config(cls: type[T], path: Path) -> T:
    data = json.loads(Path(path).read_text())
    data.pop("type", None)
    return from_dict(cls, data)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "trak": TrakConfig}
_SUBCONFIGS = {
    ("AnalysisConfig", "data"): DataConfig,
    ("AnalysisConfig", "model"): ModelConfig,
    ("AnalysisConfig", "train"): TrainConfig,
    ("AnalysisConfig", "trak"): TrakConfig,
}
