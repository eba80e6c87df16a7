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
    resize: int | None = None  # None: squash to image_size; N: shorter side to N, centre crop image_size


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "small_cnn"  # small_cnn | any torchvision classification model (`d3m models`)
    width: int = 1  # channel-width divisor (small_cnn): 1 = full, 2 = half; used for proxy models
    weights: str | None = None  # None (random init) | imagenet | a file: state_dict, TorchScript, checkpoint
    normalize: str = "auto"  # input normalisation: auto (imagenet for torchvision archs) | imagenet | default


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 12
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    steps: int | None = None  # fixed optimizer-step budget (overrides epochs when set)
    optimizer: str = "adam"  # adam | sgd (with momentum)
    momentum: float = 0.9  # sgd only
    augment: str = "auto"  # auto (crop_flip for torchvision archs, none for small_cnn) | crop_flip | none
    amp: bool = True  # mixed precision (bfloat16 autocast) when training on a GPU; ignored on CPU


@dataclass(frozen=True)
class TrakConfig:
    n_models: int = 5  # ensemble size T
    subset_fraction: float = 0.5  # each model trains on a random subset of this size
    proj_dim: int = 2048  # total feature dimension per model
    projector: str = "factored"  # factored (per-layer Kronecker) | sparse (sign sketch) | dense (reference)
    scope: str = "auto"  # auto (resolve_scope: last; last:3 from 10,000 train examples on small_cnn) | last | last:N | all
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


# Named training recipes (`--recipe`): the paper's settings (seeds/001 appendix B.2); any
# setting given explicitly wins over the recipe's.
RECIPES: dict[str, dict[str, Any]] = {
    # ImageNet-pretrained ResNet fine-tuned on Waterbirds: Adam, lr 1e-4, wd 1e-4, batch 32, 20 epochs
    "paper-waterbirds": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 32,
                         "epochs": 20, "augment": "crop_flip"},
    # randomly initialised ResNet-18 on CelebA: Adam, lr 1e-3, wd 1e-4, batch 512, 5 epochs (Age)
    "paper-celeba": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 512, "epochs": 5},
}


def analysis_config(data_root: str | Path = DEFAULT_DATA, group_attribute: str | None = None,
                    recipe: str | None = None, **settings: Any) -> AnalysisConfig:
    """AnalysisConfig defaults with the given settings, for the CLI, the dashboard and tests.

    Each setting names a field of one section (image_size, arch, weights, epochs, seed,
    device, n_models, proj_dim, projector, scope, ...); None keeps the default. A name found in
    two sections (batch_size) sets the first: data, model, train, then trak. `recipe` (a key
    of RECIPES) fills the settings it names unless given. With `weights="imagenet"` the image
    size and resize default to the weights' own preprocessing (e.g. 224 px crops of 256 px).
    """
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    settings = {**RECIPES.get(recipe or "", {}), **{k: v for k, v in settings.items() if v is not None}}
    base = AnalysisConfig()
    sections = {name: {} for name in _SECTIONS}
    for key, value in settings.items():
        owner = next((name for name, cls in _SECTIONS.items()
                      if key in {f.name for f in dataclasses.fields(cls)}), None)
        if owner is None:
            raise ValueError(f"unknown analysis setting {key!r}")
        sections[owner][key] = value
    model = dataclasses.replace(base.model, **sections["model"])
    if is_imagenet(model.weights):
        from core.train.weights import imagenet_sizes  # torchvision: imported only when needed

        sections["data"] = {**imagenet_sizes(model.arch, model.weights, sections["data"].get("image_size")),
                            **sections["data"]}
    data = dataclasses.replace(base.data, root=str(Path(data_root).resolve()),
                               group_attribute=group_attribute or None, **sections["data"])
    return AnalysisConfig(data=data, model=model, **{name: dataclasses.replace(getattr(base, name), **sections[name])
                                                     for name in ("train", "trak")})


def is_imagenet(weights: str | None) -> bool:
    """`imagenet` or `imagenet:<torchvision weights name>` (e.g. imagenet:IMAGENET1K_V1)."""
    return weights is not None and (weights == "imagenet" or weights.startswith("imagenet:"))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict) -> T:
    """Rebuild a (nested) config dataclass; unknown keys are an error, not silently dropped.

    A field missing from `data` (a config saved before the field existed) takes its default,
    or its LEGACY value where the default would change what an older artifact meant."""
    kwargs = {name: value for (owner, name), value in LEGACY.items()
              if owner == cls.__name__ and name not in data}
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


# Fields added after run folders were written, with the value that reproduces those runs
# (an older resnet18 run was trained on 0.5/0.25-normalised inputs, without augmentation, in fp32).
LEGACY = {("ModelConfig", "normalize"): "default", ("TrainConfig", "augment"): "none",
          ("TrainConfig", "amp"): False}

_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "trak": TrakConfig}
_SUBCONFIGS = {
    ("AnalysisConfig", "data"): DataConfig,
    ("AnalysisConfig", "model"): ModelConfig,
    ("AnalysisConfig", "train"): TrainConfig,
    ("AnalysisConfig", "trak"): TrakConfig,
}
