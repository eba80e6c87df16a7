"""Where a model's starting weights come from: torchvision's ImageNet weights, or a file.

`--weights imagenet` (or `imagenet:<NAME>`, e.g. imagenet:IMAGENET1K_V1) reads the file from the
torch cache (`$TORCH_HOME/hub/checkpoints`), downloading it there when the machine is online;
offline (or with D3M_OFFLINE=1, which never downloads) it fails in one line saying where to
fetch the file and how to pass it by path. A path may hold a state_dict (read with
weights_only, as any file here), a checkpoint dict with one (`state_dict`, `model`, ...), a
TorchScript archive, or a whole pickled model (`torch.save(model)`: unpickling runs code from
the file, so it is only tried when the safe reading fails; pass only files you trust). The
final classifier's weights are never loaded: the head is always new, sized for the dataset.
"""
from __future__ import annotations

import os
import pickle
import urllib.error
import warnings
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from core.train.archs import AUX_PREFIXES, imagenet_weights

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module", "ema")  # checkpoint keys
_PREFIXES = ("module.", "_orig_mod.", "model.")  # DataParallel, torch.compile, Lightning


class WeightsError(ValueError):
    """Weights that cannot be had or do not fit the architecture (one line)."""


def imagenet_sizes(arch: str, spec: str, image_size: int | None) -> dict[str, int]:
    """The weights' own preprocessing as DataConfig settings: image_size = the crop size (unless
    given) and resize = its resize size scaled by image_size / crop (256 -> 224 crops: 8/7)."""
    t = imagenet_weights(arch, spec).transforms()
    crop, resize = t.crop_size[0], t.resize_size[0]
    size = image_size or crop
    return {"image_size": size, "resize": max(size, round(size * resize / crop))}


def imagenet_meta(arch: str, spec: str) -> dict:
    return imagenet_weights(arch, spec).meta


def imagenet_file(arch: str, spec: str) -> Path:
    """The ImageNet weights file of `arch` in the torch cache, downloaded into it when missing."""
    weights = imagenet_weights(arch, spec)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if cached.is_file():
        return cached
    if os.environ.get("D3M_OFFLINE", "") not in ("", "0"):
        raise WeightsError(_offline(arch, weights, cached, "D3M_OFFLINE is set"))
    digest = torch.hub.HASH_REGEX.search(cached.name)  # torchvision names files <arch>-<sha256 prefix>
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(cached), digest.group(1) if digest else None, progress=False)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:  # RuntimeError: a corrupt download
        raise WeightsError(_offline(arch, weights, cached, f"{type(exc).__name__}: {exc}")) from None
    return cached


def imagenet_state(arch: str, spec: str) -> dict[str, torch.Tensor]:
    return torch.load(imagenet_file(arch, spec), map_location="cpu", weights_only=True)


def _offline(arch: str, weights: Any, cached: Path, reason: str) -> str:
    return (f"ImageNet weights {weights} for {arch} are not in the torch cache and cannot be downloaded "
            f"({reason}): on a machine with internet fetch {weights.url} (e.g. curl -LO {weights.url}), "
            f"then pass it with --weights /path/to/{cached.name} or copy it to {cached.parent}/")


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in a weights file (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights file not found: {path}")
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a pickled nn.Module: only an unrestricted unpickler reads it
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WeightsError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {str(exc)[:120]})") from None
    return _state_dict_of(obj, path)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_prefixes(dict(obj))
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                return _state_dict_of(obj[key], path)
    keys = list(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
    raise WeightsError(f"{path}: no state_dict found (expected a dict of tensors or a checkpoint with "
                       f"one of {', '.join(_WRAPPERS)}); it holds {keys}")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], head: str, source: str, arch: str) -> None:
    """Load every weight but the final classifier `head`'s (and auxiliary heads') into `model`;
    a mismatch raises naming the first missing, unexpected and mis-shaped keys."""
    skip = (head + ".",) + AUX_PREFIXES
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (first {missing[0]!r})" if missing else "",
                 f"{len(unexpected)} unexpected (first {unexpected[0]!r})" if unexpected else "",
                 f"{len(shapes)} of another shape (first {shapes[0]})" if shapes else ""]
        raise WeightsError(f"{source}: not {arch} weights: keys {', '.join(p for p in parts if p)}")
    model.load_state_dict(state, strict=False)
