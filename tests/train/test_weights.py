"""--weights: a file in any of its formats loads with the head replaced, a file for another
architecture is refused naming keys, `imagenet` reads torchvision's file from the torch cache
and offline fails in one line (no download is attempted here), and the weights' own
preprocessing (resize, crop, normalisation) is applied."""
from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import models, transforms

from core.config import AnalysisConfig, ModelConfig, analysis_config, from_dict, to_dict
from core.data.images import _read_image, to_tensor
from core.train.models import Normalized, build_model
from core.train.weights import WeightsError


@pytest.fixture
def source() -> torch.nn.Module:
    torch.manual_seed(1)
    return models.resnet18(num_classes=1000)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty torch cache; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("D3M_OFFLINE", "1")

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def assert_backbone_is(model: torch.nn.Module, state: dict, classes: int) -> None:
    """Every weight but fc's is the file's; fc is new and sized for the classes."""
    assert isinstance(model, Normalized)  # torchvision weights: ImageNet's normalisation
    own = model.net.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert own["fc.weight"].shape == (classes, 512)
    assert not torch.equal(own["fc.weight"][:classes], state["fc.weight"][:classes])


@pytest.mark.parametrize("form", ["state_dict", "checkpoint", "torchscript", "pickled_model"])
@pytest.mark.parametrize("classes", [2, 10])
def test_a_weights_file_loads_with_the_head_replaced(tmp_path, source, form, classes):
    path = tmp_path / f"{form}.pt"
    state = {k: v.clone() for k, v in source.state_dict().items()}
    if form == "state_dict":
        torch.save(state, path)
    elif form == "checkpoint":  # a training checkpoint of a DataParallel model
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif form == "torchscript":
        torch.jit.trace(source.eval(), torch.zeros(1, 3, 32, 32)).save(str(path))
    else:
        torch.save(source, path)
    assert_backbone_is(build_model(ModelConfig("resnet18", weights=str(path)), classes, 32), state, classes)


def test_a_file_for_another_architecture_is_refused_naming_keys(tmp_path):
    r34 = models.resnet34().state_dict()
    torch.save(r34, tmp_path / "r34.pt")
    r18_keys = set(models.resnet18().state_dict())
    first_extra = next(k for k in r34 if k not in r18_keys)  # layer1.2.conv1.weight
    with pytest.raises(WeightsError, match=rf"r34.pt: not resnet18 weights: keys \d+ unexpected "
                                           rf"\(first '{first_extra}'\)"):
        build_model(ModelConfig("resnet18", weights=str(tmp_path / "r34.pt")), 2, 32)
    torch.save(models.mobilenet_v3_small().state_dict(), tmp_path / "mobile.pt")
    with pytest.raises(WeightsError, match=r"\d+ missing \(first 'conv1.weight'\), \d+ unexpected "
                                           r"\(first 'features.0.0.weight'\)"):
        build_model(ModelConfig("resnet18", weights=str(tmp_path / "mobile.pt")), 2, 32)
    bad = models.resnet18().state_dict()
    bad["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"1 of another shape \(first conv1.weight \(64, 3, 5, 5\) != "
                                           r"\(64, 3, 7, 7\)\)"):
        build_model(ModelConfig("resnet18", weights=str(tmp_path / "bad.pt")), 2, 32)
    torch.save({"optimizer": 1}, tmp_path / "none.pt")
    with pytest.raises(WeightsError, match="no state_dict found"):
        build_model(ModelConfig("resnet18", weights=str(tmp_path / "none.pt")), 2, 32)


def test_imagenet_offline_fails_in_one_line_saying_how_to_fetch(offline_cache):
    with pytest.raises(WeightsError) as info:
        build_model(ModelConfig("resnet50", weights="imagenet"), 2, 224)
    message = str(info.value)
    url = models.ResNet50_Weights.IMAGENET1K_V2.url  # resnet50's default ImageNet weights
    assert "\n" not in message
    assert f"fetch {url}" in message and "--weights /path/to/resnet50-11ad3fa6.pth" in message
    assert str(offline_cache) in message


def test_imagenet_when_the_download_fails_names_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("D3M_OFFLINE", raising=False)
    tried = []

    def unreachable(url, dst, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(WeightsError, match=r"cannot be downloaded \(URLError: .*Name or service not known.*\): "
                                           r"on a machine with internet fetch"):
        build_model(ModelConfig("resnet18", weights="imagenet:IMAGENET1K_V1"), 2, 224)
    assert tried == [models.ResNet18_Weights.IMAGENET1K_V1.url]


def test_imagenet_weights_are_read_from_the_torch_cache(offline_cache, source):
    offline_cache.mkdir(parents=True)
    state = source.state_dict()
    torch.save(state, offline_cache / "resnet18-f37072fd.pth")  # the name torchvision's URL gives
    assert_backbone_is(build_model(ModelConfig("resnet18", weights="imagenet"), 2, 224), state, 2)
    with pytest.raises(ValueError, match="has no weights 'V9'"):
        build_model(ModelConfig("resnet18", weights="imagenet:V9"), 2, 224)


def test_imagenet_preprocessing_sizes_come_from_the_weights():
    cfg = analysis_config(arch="resnet18", weights="imagenet")
    assert (cfg.data.image_size, cfg.data.resize) == (224, 256)  # ResNet18_Weights: resize 256, crop 224
    cfg = analysis_config(arch="resnet50", weights="imagenet")
    assert (cfg.data.image_size, cfg.data.resize) == (224, 232)  # IMAGENET1K_V2: resize 232
    cfg = analysis_config(arch="resnet18", weights="imagenet", image_size=64)
    assert (cfg.data.image_size, cfg.data.resize) == (64, 73)  # same crop fraction: 64 * 256/224
    assert analysis_config(arch="resnet18", weights="imagenet", resize=300).data.resize == 300


@pytest.mark.parametrize("size_wh", [(300, 200), (180, 260)])
def test_resize_and_centre_crop_match_torchvision(tmp_path, size_wh):
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8)).save(path)
    expected = transforms.Compose([transforms.Resize(73), transforms.CenterCrop(64)])(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(_read_image(path, 64, 73), np.asarray(expected))


def test_imagenet_normalisation_reaches_the_first_layer(tmp_path, source):
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model(ModelConfig("resnet18", weights=str(tmp_path / "w.pt")), 2, 32).eval()
    seen = []
    model.net.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    colour = np.array([200, 100, 30], np.uint8)
    with torch.no_grad():
        model(to_tensor(np.broadcast_to(colour, (1, 32, 32, 3))))
    t = models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    expected = (torch.tensor(colour / 255.0) - torch.tensor(t.mean)) / torch.tensor(t.std)
    torch.testing.assert_close(seen[0][0, :, 5, 5], expected.float(), rtol=1e-5, atol=1e-5)
    plain = build_model(ModelConfig("resnet18"), 2, 32)  # random init: the project's own normalisation
    assert not isinstance(plain, Normalized)


def test_a_config_saved_before_these_options_loads_as_it_was_made():
    old = to_dict(AnalysisConfig())
    for section, name in (("data", "resize"), ("model", "normalize"), ("train", "optimizer"),
                          ("train", "momentum"), ("train", "augment"), ("train", "amp")):
        del old[section][name]
    old["model"].update(arch="resnet18", weights="/old/r18.pt")
    cfg = from_dict(AnalysisConfig, old)
    assert cfg.model.normalize == "default" and cfg.train.augment == "none" and cfg.train.amp is False
    assert cfg.train.optimizer == "adam" and cfg.data.resize is None
    assert not isinstance(build_model(cfg.model, 2, 32, load_weights=False), Normalized)
    assert from_dict(AnalysisConfig, to_dict(AnalysisConfig())).model.normalize == "auto"
