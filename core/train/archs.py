"""Any torchvision classification model by name, with its final classifier sized for the
dataset's classes whatever the family calls it (fc, classifier[-1], heads.head, head).

The head is the last nn.Linear in module order for every torchvision classifier but
SqueezeNet, whose classifier is a 1x1 convolution, a ReLU and an average pool; there the
classifier becomes average pool + linear (the same linear map of the pooled features, without
the ReLU on the logits). `arch_kwargs` reproduces what torchvision's builders set when they load
ImageNet weights (GoogLeNet / Inception input transform, ViT / MaxViT input size), so a model
rebuilt from a checkpoint has the same architecture as the one that was trained.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

from torch import nn

SMALL_CNN = "small_cnn"
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")  # GoogLeNet / Inception auxiliary heads: not used
_SIZE_PARAM = {"vit_": "image_size", "maxvit_": "input_size"}  # archs built for one input size


@lru_cache(maxsize=1)
def torchvision_archs() -> tuple[str, ...]:
    """Every torchvision classification model name (torchvision.models, not detection etc.)."""
    from torchvision import models

    return tuple(models.list_models(module=models))


def check_arch(arch: str) -> None:
    """ValueError naming the arch when it is neither small_cnn nor a torchvision classifier."""
    if arch != SMALL_CNN and arch not in torchvision_archs():
        close = [a for a in torchvision_archs() if a.startswith(arch[:4])][:6]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown model arch {arch!r}: choose small_cnn or a torchvision classifier "
                         f"(`d3m models` lists them){hint}")


def arch_kwargs(arch: str, image_size: int, imagenet_meta: dict | None) -> dict[str, Any]:
    """Builder arguments: no auxiliary heads; the input size of size-bound archs (the weights'
    own size when ImageNet weights are used); GoogLeNet / Inception's input transform with them."""
    kwargs: dict[str, Any] = {}
    if arch in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=imagenet_meta is None,
                      transform_input=imagenet_meta is not None)
    for prefix, param in _SIZE_PARAM.items():
        if arch.startswith(prefix):
            size = imagenet_meta["min_size"] if imagenet_meta is not None else (image_size, image_size)
            kwargs[param] = size[0] if param == "image_size" else tuple(size)
    return kwargs


def build_torchvision(arch: str, image_size: int, imagenet_meta: dict | None = None) -> nn.Module:
    """The torchvision model `arch` with ImageNet's 1000 outputs and random weights."""
    from torchvision import models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. torchvision's init-weights notices
        return models.get_model(arch, weights=None, **arch_kwargs(arch, image_size, imagenet_meta))


def head_name(model: nn.Module) -> str:
    """Dotted name of the final classifier layer: the last nn.Linear in module order."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer to use as its classifier")
    return linears[-1]


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the final classifier for a fresh one with `num_classes` outputs; return its name."""
    if type(model).__name__ == "SqueezeNet":
        final = model.classifier[1]
        model.classifier = nn.Sequential(nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                         nn.Linear(final.in_channels, num_classes))
    name = head_name(model)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent.get_submodule(child)
    setattr(parent, child, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return name


def imagenet_weights(arch: str, spec: str):
    """The torchvision weights enum entry of `imagenet` (the arch's default) or `imagenet:NAME`."""
    from torchvision import models

    if arch == SMALL_CNN:
        raise ValueError("--weights imagenet needs a torchvision arch (small_cnn has no ImageNet weights)")
    enum = models.get_model_weights(arch)
    name = spec.partition(":")[2]
    if not name:
        return enum.DEFAULT
    if name not in enum.__members__:
        raise ValueError(f"{arch} has no weights {name!r}: choose one of {', '.join(enum.__members__)}")
    return enum[name]


def describe_archs() -> list[dict[str, Any]]:
    """One row per model for `d3m models`: name, ImageNet weights and their preprocessing."""
    rows = [{"arch": SMALL_CNN, "imagenet": "-", "preprocessing": "any size; squash, 0.5/0.25 normalisation"}]
    for arch in torchvision_archs():
        weights = imagenet_weights(arch, "imagenet")
        t = weights.transforms()
        rows.append({"arch": arch, "imagenet": weights.name,
                     "preprocessing": f"resize {t.resize_size[0]}, crop {t.crop_size[0]}, "
                                      f"min {weights.meta['min_size'][0]} px"})
    return rows
