"""BA-LoRA, Bias-Alleviating Low-Rank Adaptation (Chang, Chang, Wu; arXiv 2408.04556; seeds/002).

The analysis's ERM model (trained from the user's --weights when given) is fine-tuned with LoRA
adapters (ΔW = BA, rank `rank`, scale `alpha`/`rank`; the `peft` library, its default
initialisation B = 0 so training starts at the ERM model) on every linear and convolution layer,
the base weights frozen. The loss on a batch, with z the adapted logits and z₀ the frozen base's:

    L = CE(z, y) + λ_c KL(softmax z₀ || softmax z) + λ_d R_div(z) + λ_s R_svd(z)

(core.train.losses.consistency / diversity / svd_share; a λ of 0 drops its term). The adapters are
trained through core.train.training.train for `steps` optimizer steps (0: the ERM step budget) with
batches of `batch_size` and Adam at `lr`; the epoch with the best validation worst-group
accuracy is kept (no/yes), and the adapters are merged into the weights of the returned model.
The paper initialises LoRA with PiSSA and evaluates language models; here it is a fine-tuning
method for the image classifier the analysis already has.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.attribution.gradients import scoped_layers
from core.config import TrainConfig
from core.train.losses import consistency, diversity, svd_share
from core.methods.base import MethodContext, MethodResult, register
from core.methods.options import Option
from core.methods.frozen import AlwaysEval, load_erm
from core.methods.selection_by_val import EpochSelector, keep_best
from core.progress import scaled
from core.train.training import predict_logits, train


class Adapted(AlwaysEval):
    """The peft model as a plain classifier (eval mode always: LoRA dropout is 0 and the frozen
    base's batch-norm statistics must not move)."""

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        self.peft = peft_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.peft(x)

    def merged(self) -> nn.Module:
        """The base architecture with the adapters folded into its weights."""
        return self.peft.merge_and_unload().eval()


def with_adapters(base: nn.Module, rank: int, alpha: float) -> Adapted:
    """LoRA adapters (peft) on every linear and conv layer of `base`; only they are trainable.
    peft is imported here: it loads transformers, seconds that nothing else should pay."""
    from peft import LoraConfig, get_peft_model

    targets = [name for name, _ in scoped_layers(base, "all")]
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    return Adapted(get_peft_model(base, config))


class BALoRALoss:
    """loss_fn: CE + λ_c consistency with the base logits (by example id) + λ_d diversity + λ_s SVD."""

    def __init__(self, base_logits_by_id: torch.Tensor, lambda_consistency: float, lambda_diversity: float,
                 lambda_svd: float, svd_k: int):
        self.base = base_logits_by_id
        self.lambdas = {"consistency": lambda_consistency, "diversity": lambda_diversity, "svd": lambda_svd}
        self.svd_k = svd_k

    def terms(self, logits: torch.Tensor, batch_ids: np.ndarray) -> dict[str, torch.Tensor]:
        """The regularisers whose λ is not 0 (a term switched off is not computed at all)."""
        fns = {"consistency": lambda: consistency(logits, self.base[torch.as_tensor(batch_ids)].to(logits.device)),
               "diversity": lambda: diversity(logits), "svd": lambda: svd_share(logits, self.svd_k)}
        return {name: fns[name]() for name, lam in self.lambdas.items() if lam}

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, batch_ids: np.ndarray) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        for name, value in self.terms(logits, batch_ids).items():
            loss = loss + self.lambdas[name] * value
        return loss


def fit_adapters(ctx: MethodContext, params: dict) -> tuple[Adapted, int, dict]:
    """The adapted ERM model at its best epoch by validation WGA, the steps taken, the selection info."""
    base = load_erm(ctx)
    data, idx = ctx.data, ctx.train_idx
    base_logits = torch.zeros(len(data.labels), data.n_classes)
    base_logits[torch.as_tensor(idx)] = torch.as_tensor(predict_logits(base, data.images, idx, ctx.device))
    model = with_adapters(base, params["rank"], params["alpha"]).to(ctx.device)
    loss = BALoRALoss(base_logits, params["lambda_consistency"], params["lambda_diversity"], params["lambda_svd"],
                      params["svd_k"])
    seed = int(params.get("seed", ctx.cfg.train.seed))
    cfg = TrainConfig(lr=params["lr"], weight_decay=0.0, batch_size=params["batch_size"], seed=seed,
                      steps=params["steps"] or ctx.erm_steps)
    selector = EpochSelector(ctx.val_wga)
    steps = train(model, data.images, data.labels, idx, cfg, ctx.device, loss_fn=loss, on_epoch=selector,
                  report=scaled(ctx.report, "BA-LoRA: "))
    keep_best(selector, model, steps, math.ceil(len(idx) / cfg.batch_size))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, steps, {**selector.info(), "trainable_params": trainable,
                          "total_params": sum(p.numel() for p in model.parameters())}


@register("ba_lora", "BA-LoRA (bias-alleviating LoRA fine-tuning)", group_info="no/yes", removes=False,
          options={"rank": Option(8, ge=1, help="rank of the LoRA adapters"),
                   "alpha": Option(16.0, gt=0, help="LoRA scale numerator (ΔW scaled by alpha / rank)"),
                   "lr": Option(1e-3, gt=0, help="Adam learning rate of the adapters"),
                   "batch_size": Option(64, ge=1, help="examples per batch"),
                   "steps": Option(0, ge=0, help="optimizer steps (0: the ERM step budget)"),
                   "lambda_consistency": Option(1.0, ge=0, help="λ_c: KL to the frozen base's outputs (0: off)"),
                   "lambda_diversity": Option(0.1, ge=0, help="λ_d: diversity regulariser (0: off)"),
                   "lambda_svd": Option(0.1, ge=0, help="λ_s: SVD top-k share regulariser (0: off)"),
                   "svd_k": Option(1, ge=1, help="k of the SVD regulariser")})
def ba_lora(ctx: MethodContext, params: dict) -> MethodResult:
    model, steps, info = fit_adapters(ctx, params)
    info.update({k: params[k] for k in ("rank", "alpha", "lr", "batch_size", "lambda_consistency",
                                        "lambda_diversity", "lambda_svd", "svd_k")})
    return MethodResult(model.merged(), np.zeros(0, np.int64), steps, info)
