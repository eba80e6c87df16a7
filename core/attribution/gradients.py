"""Projected per-example gradients of the correct-class margin: TRAK's g(z) = Pᵀ ∇θ f(z).

f(z) = log(p / (1 - p)) of the true class, computed stably as the true logit minus the
logsumexp of the other logits (seeds/001 section 4; shared/notes/d3m.md).

Three featurizers (FEATURIZERS; the names are TrakConfig.projector's choices), one signature
`featurizer(model, x, y) -> (features (B, k), p (B,))`:
- `FactoredFeaturizer` (default): one forward/backward of the summed margins with hooks on
  each linear/conv layer in scope (no weight gradients are computed); the per-example gradient
  of such a layer is Σ_l δ_l a_lᵀ, projected per layer by a Kronecker projector without ever
  being formed. Requires the model in eval mode (examples independent: no batch statistics).
- `SparseFeaturizer`: the same hooks give each layer's explicit per-example gradient
  Σ_l δ_l a_lᵀ (one einsum), which a sparse sign projection adds into the k features.
- `DenseFeaturizer` (reference): explicit per-example gradients with torch.func, flattened and
  multiplied by a dense Gaussian projection.
"""
from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from core.attribution.projectors import DenseProjector, KroneckerProjector, SparseProjector

LAYER_TYPES = (nn.Linear, nn.Conv2d)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(p_y / (1 - p_y)) = logit_y - logsumexp(other logits), per example."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def true_class_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)


AUTO_WIDE_FROM = 10_000  # scope "auto": the last AUTO_WIDE_LAYERS layers from this many train examples
AUTO_WIDE_LAYERS = 3


def resolve_scope(scope: str, n_train: int, small_cnn: bool = True) -> str:
    """The gradient scope used for `n_train` train examples: for the small CNN, "auto" is the
    final layer ("last") below AUTO_WIDE_FROM train examples and the last AUTO_WIDE_LAYERS
    linear/conv layers ("last:3") from there; for any other model (`small_cnn=False`: a
    torchvision architecture) always the final layer. Any other scope is used as given.

    Why (BENCHMARKS.md, "Attribution: cost and fidelity"): on the 3,000-example sample the
    final layer's exact gradient has the best LDS at T = 5 (0.310; all layers 0.237, traker
    0.225). At 20,000 it falls behind: LDS 0.139 against 0.180 for the last three layers and
    0.172 for all layers (2026-12-05; on 2026-11-23 0.157, 0.197, 0.203, traker 0.206), and the
    last three layers cost 1.48 training epochs per model against 2.04 for all layers (CPU time,
    one thread): the small CNN's first conv layer, the costliest to featurize, adds no measured
    fidelity. The switch point between 3,000 and 20,000 is provisional (nothing measured
    between), and so is the choice at 80,000 (BENCHMARKS.md says what was run there). Both were
    measured on the small CNN only: on a ResNet-50 at 224 px the final layer costs one forward
    pass per example (the penultimate features) where wider scopes cost several epochs, and
    depthwise or attention layers (EfficientNet, ConvNeXt, ViT) need `--projector dense` for them.
    """
    if scope != "auto":
        return scope
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    return f"last:{AUTO_WIDE_LAYERS}" if n_train >= AUTO_WIDE_FROM and small_cnn else "last"


def is_small_cnn(model: nn.Module) -> bool:
    """Whether `model` is (or wraps) core.train.models.SmallCNN (by name: attribution does not
    import the model factory)."""
    return any(type(m).__name__ == "SmallCNN" for m in model.modules())


def scoped_layers(model: nn.Module, scope: str) -> list[tuple[str, nn.Module]]:
    """Linear/conv layers in definition order, cut to the scope: all | last | last:N
    ("auto" must be resolved first, by resolve_scope)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    if scope == "all":
        return layers
    if scope == "last":
        return layers[-1:]
    if scope.startswith("last:") and scope[5:].isdigit() and int(scope[5:]) > 0:
        return layers[-int(scope[5:]):]
    raise ValueError(f"unknown gradient scope {scope!r}: use auto, all, last or last:N")


def layer_dims(module: nn.Module) -> tuple[int, int]:
    """(d_in including the bias column, d_out) of the layer's weight-gradient matrix."""
    bias = int(module.bias is not None)
    if isinstance(module, nn.Linear):
        return module.in_features + bias, module.out_features
    kh, kw = module.kernel_size
    return module.in_channels * kh * kw + bias, module.out_channels


def layer_inputs(module: nn.Module, x: torch.Tensor, p_in: torch.Tensor | None = None) -> torch.Tensor:
    """Rows P_inᵀ a_l (B, L, k_in) of the layer input (conv: patches; a ones entry for the bias).

    p_in (d_in, k_in), or None for the identity (then k_in = d_in). For a conv layer the
    projected patches are themselves a convolution of x with P_in as the kernel (the identity
    kernel gives the plain patches), much faster on CPU than unfolding the patches first.
    """
    d_in = layer_dims(module)[0]
    w = torch.eye(d_in, dtype=x.dtype, device=x.device) if p_in is None else p_in.to(x.dtype)
    n = d_in - int(module.bias is not None)
    bias = w[n] if module.bias is not None else None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros":
            raise ValueError(f"factored gradients support plain conv layers only, not {module}")
        kernel = w[:n].T.reshape(w.shape[1], module.in_channels, *module.kernel_size)
        out = F.conv2d(x, kernel, bias, module.stride, module.padding, module.dilation)
        return out.flatten(2).transpose(1, 2)
    return F.linear(x.reshape(x.shape[0], -1, x.shape[-1]), w[:n].T, bias)


def layer_outgrads(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """The gradient w.r.t. the layer's output as (B, L, d_out)."""
    if isinstance(module, nn.Conv2d):
        return g.flatten(2).transpose(1, 2)
    return g.reshape(g.shape[0], -1, g.shape[-1])


def capture(model: nn.Module, layers: list[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor
            ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """One forward/backward of Σ margins: per layer its input x and δ (B, L, d_out), and the logits.

    The model must be in eval mode, so that examples are independent (no batch statistics)
    and Σ_l δ_l a_lᵀ is exactly example b's gradient. Parameters are frozen for the pass and
    the graph starts at the first scoped layer's output, so the backward computes only the
    δ's it needs: no weight gradients, and nothing below the scope (cheap `last` scopes).
    """
    inputs: dict[int, torch.Tensor] = {}
    grads: dict[int, torch.Tensor] = {}

    def hook(i: int):
        def fn(module: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
            inputs[i] = inp[0].detach()
            if not out.requires_grad:  # the first scoped layer: the graph starts here
                out = out.detach().requires_grad_(True)
            out.register_hook(lambda g: grads.__setitem__(i, g.detach()))
            return out
        return fn

    frozen = [p for p in model.parameters() if p.requires_grad]
    handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(layers)]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.enable_grad():
            logits = model(x)
            margin(logits, y).sum().backward()
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    delta = [layer_outgrads(m, grads[i]) for i, (_, m) in enumerate(layers)]
    return [inputs[i] for i in range(len(layers))], delta, logits.detach()


def layer_grads(a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Per-example weight gradients Σ_l δ_l a_lᵀ as (B, d_out, d_in); the last column is the bias."""
    return torch.einsum("blo,bli->boi", delta, a)


class FactoredFeaturizer:
    """Per-layer Kronecker-projected gradients from one forward/backward per batch."""

    def __init__(self, model: nn.Module, scope: str, proj_dim: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.layers = scoped_layers(model, scope)
        k_layer = max(1, proj_dim // len(self.layers))
        self.projectors = [KroneckerProjector.make(*layer_dims(m), k_layer, seed * 1009 + i, device)
                           for i, (_, m) in enumerate(self.layers)]
        self.dim = sum(p.dim(*layer_dims(m)) for p, (_, m) in zip(self.projectors, self.layers))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, delta, logits = capture(model, self.layers, x, y)
        feats = [proj.combine(layer_inputs(m, x_i, proj.p_in), d_i)
                 for proj, (_, m), x_i, d_i in zip(self.projectors, self.layers, xs, delta)]
        return torch.cat(feats, dim=1), true_class_prob(logits, y)


class SparseFeaturizer:
    """Explicit per-layer per-example gradients from the hooks, sparse-sign projected to proj_dim."""

    def __init__(self, model: nn.Module, scope: str, proj_dim: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.layers = scoped_layers(model, scope)
        self.projectors = [SparseProjector(math.prod(layer_dims(m)), proj_dim, seed * 1009 + i, device)
                           for i, (_, m) in enumerate(self.layers)]
        self.dim = proj_dim

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, delta, logits = capture(model, self.layers, x, y)
        out = torch.zeros(x.shape[0], self.dim, device=x.device)
        for proj, (_, m), x_i, d_i in zip(self.projectors, self.layers, xs, delta):
            proj(layer_grads(layer_inputs(m, x_i), d_i).reshape(x.shape[0], -1), out=out)
        return out, true_class_prob(logits, y)


def per_example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      names: list[str]) -> dict[str, torch.Tensor]:
    """∇θ f(z) per example for the named parameters (torch.func), each (B, *param.shape)."""
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    fixed.update(dict(model.named_buffers()))

    def f(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**fixed, **p}, (xi[None],))
        return margin(logits, yi[None]).squeeze(0)

    return vmap(grad(f), in_dims=(None, 0, 0))(params, x, y)


class DenseFeaturizer:
    """Reference: explicit per-example gradients of the scoped layers, dense Gaussian projection."""

    def __init__(self, model: nn.Module, scope: str, proj_dim: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.names = [f"{n}.{p}" for n, m in scoped_layers(model, scope) for p, _ in m.named_parameters(recurse=False)]
        n_params = sum(dict(model.named_parameters())[n].numel() for n in self.names)
        self.projector = DenseProjector(n_params, proj_dim, seed, device)
        self.dim = proj_dim

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = per_example_grads(model, x, y, self.names)
        flat = torch.cat([g[n].reshape(x.shape[0], -1) for n in self.names], dim=1)
        with torch.no_grad():
            p = true_class_prob(model(x), y)
        return self.projector(flat), p


class Featurizer(Protocol):
    """A featurizer stage: for a batch, the projected per-example gradients of the margin
    (B, dim) and the probability of the true class (B,), from one model."""

    dim: int

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


FEATURIZERS = {"factored": FactoredFeaturizer, "sparse": SparseFeaturizer, "dense": DenseFeaturizer}


def make_featurizer(model: nn.Module, projector: str, scope: str, proj_dim: int, seed: int,
                    device: torch.device | str = "cpu") -> Featurizer:
    """The featurizer named `projector` (a key of FEATURIZERS): factored | sparse | dense."""
    if projector not in FEATURIZERS:
        raise ValueError(f"unknown projector {projector!r}: choose one of {sorted(FEATURIZERS)}")
    return FEATURIZERS[projector](model, scope, proj_dim, seed, device)
