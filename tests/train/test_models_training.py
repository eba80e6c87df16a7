"""Model factory, device choice, and the seeded training loop with its hooks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.config import ModelConfig, TrainConfig
from core.train.models import build_model, pick_device
from core.train.training import predict_logits, steps_for, train


def toy_images(n: int = 64, seed: int = 0):
    """Label = whether the left half is brighter than the right half."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    labels = (images[:, :, :8].mean(axis=(1, 2, 3)) > images[:, :, 8:].mean(axis=(1, 2, 3))).astype(np.int64)
    return images, labels


@pytest.mark.parametrize("cfg, classes", [(ModelConfig("small_cnn"), 3), (ModelConfig("small_cnn", width=2), 2),
                                          (ModelConfig("resnet18"), 5)])
def test_models_give_a_logit_per_class_for_each_example_independently(cfg, classes):
    """In eval mode a batch's logits are those of its examples one at a time (TRAK's factored
    gradients rely on it), and they depend on the example."""
    torch.manual_seed(0)
    model = build_model(cfg, classes, 32).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        batch = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
    assert batch.shape == (4, classes)
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)
    assert (batch[1:] - batch[:1]).abs().amax(dim=1).min() > 1e-4


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            pick_device("cuda")


def fit(cfg: TrainConfig, **hooks):
    images, labels = toy_images()
    torch.manual_seed(cfg.seed)
    model = build_model(ModelConfig(), 2, 16)
    steps = train(model, images, labels, np.arange(48), cfg, torch.device("cpu"), **hooks)
    return model, steps, images, labels


def test_training_is_seeded_and_learns():
    cfg = TrainConfig(epochs=15, batch_size=16, lr=3e-3, seed=3)
    a, steps, images, labels = fit(cfg)
    b, _, _, _ = fit(cfg)
    c, _, _, _ = fit(TrainConfig(epochs=15, batch_size=16, lr=3e-3, seed=4))
    assert steps == 15 * 3 == steps_for(48, cfg)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    train_acc = (predict_logits(a, images, np.arange(48), torch.device("cpu")).argmax(1) == labels[:48]).mean()
    assert train_acc > 0.9


def test_step_budget_and_hooks():
    epochs, seen = [], []

    def loss_fn(logits, y, batch_ids):
        seen.extend(batch_ids.tolist())
        return torch.nn.functional.cross_entropy(logits, y)

    probs = np.zeros(48)
    probs[:4] = 0.25  # sampling with replacement from four examples only
    _, steps, _, _ = fit(TrainConfig(steps=7, batch_size=16), sample_probs=probs, loss_fn=loss_fn,
                         on_epoch=lambda e, m: epochs.append((e, m.training)))
    assert steps == 7 and len(seen) == 7 * 16 and set(seen) <= {0, 1, 2, 3}
    assert epochs == [(0, False), (1, False)]  # after each full pass of 3 batches, in eval mode
