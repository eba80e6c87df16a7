"""BA-LoRA, Bias-Alleviating Low-Rank Adaptation (Chang, Chang, Wu; arXiv 2408.04556; seeds/002).

Run as the authors' code runs it for classification (github cyp-jlu-ai/BA-LoRA, train.py with
task_type "nlu", and scripts/ba-lora.sh), on the image classifier the analysis already has:
- Model: the analysis's ERM model (trained from the user's --weights when given) with LoRA
  adapters (the `peft` library) of rank `rank` and scale `alpha`/`rank`, alpha = rank by
  default (train.py:399 `lora_alpha=lora_r`), no dropout, no bias (train.py:400-406), on every
  linear and conv layer but the last: the official code adapts the transformer's projections
  and freezes the output layer `lm_head` (train.py:401-403, 414-417); `adapt_last` = 1
  adapts it too.
- Initialisation: PiSSA (`init` = pissa; ba-lora.sh `--init_lora_weights pissa`): each adapted
  weight W (a conv kernel as out x in·kh·kw) = U S Vᵀ, B = U_r √S_r, A = √S_r V_rᵀ (divided by
  the scale) and the frozen base keeps the residual W - scale·BA, so the adapted model starts
  at the ERM model's outputs (up to rounding) with the principal directions trainable; peft's
  own `pissa_init` (tuners/lora/layer.py) does this for linear layers and refuses conv ones,
  so it is done here the same way for both. `init` = lora is peft's default (B = 0).
- Loss on a batch, z the adapted logits and z₀ the frozen base model's (train.py:202-263):

      L = CE(z, y) + λ_c R_cons(z, z₀) + λ_d R_div(z) + λ_s R_svd(z)

  consistency = MSE between the L2-normalised logits (`consistency` = mse, the official NLU
  form; kl = the NLG form, KL(softmax z₀ || softmax z)); diversity = Σ_{i≠j} C_ij² / d over
  the batch covariance of the logits; SVD = minus the share of the top-k singular values of
  the batch logits (core.train.losses). λ_c = 1e-4, λ_d = 3e-4, λ_s = 1e-4 (ba-lora.sh, train.py
  defaults 82-93) and k = `svd_k` 3 (train.py:79; min(k, number of singular values), so with two
  classes the SVD term is constant); a λ of 0 drops its term.
- Optimisation: AdamW (HF Trainer's default, weight decay 0) at `lr` 2e-5, linear warm-up over
  3% of the steps then cosine decay (ba-lora.sh `--learning_rate 2e-5 --warmup_ratio 0.03
  --lr_scheduler_type cosine`), batches of `batch_size` 128 (ba-lora.sh: 1 x 128 gradient
  accumulation).
Deliberate differences (README, "PGD, FFW and BA-LoRA"):
- Data: the paper's claim is about fine-tuning a model that inherited bias from its
  pretraining data on new downstream data. Fine-tuning the ERM model on the same biased
  training split with a group-blind loss has nothing to correct, so the downstream data here is
  a group-balanced part (`fit_fraction` 0.6) of validation, as DFR and FFW use, and the rest of
  validation picks the checkpoint (the epoch with the best worst-group accuracy, ties broken
  by average accuracy: no/yes). The official run is one epoch over 100,000 instructions
  (about 780 steps) with no selection.
- Length: `steps` optimizer steps (0: the ERM run's step budget), not one epoch: one epoch of
  a few hundred validation images is two or three steps.
- Rank: `rank` 8; the official script loads a pre-built PiSSA adapter whose rank is not in the
  repository.
info records the adapted model's distance from the base model's outputs (the consistency
MSE and the share of predictions changed, on the selection part of validation): the Compare
page shows it (`signatures`: outputs that stayed at the base model's changed nothing).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.attribution.gradients import scoped_layers
from core.config import TrainConfig
from core.methods.base import MethodContext, MethodResult, Report, register
from core.methods.options import Option
from core.methods.frozen import AlwaysEval, load_erm, val_fit_select, val_groups_reason
from core.methods.selection_by_val import EpochSelector, keep_best
from core.progress import scaled
from core.train.losses import consistency, diversity, svd_share
from core.train.training import predict_logits, train

INITS = ("pissa", "lora")
CONSISTENCY = ("mse", "kl")
WARMUP_RATIO = 0.03  # ba-lora.sh --warmup_ratio
UNCHANGED = 0.02  # at most this share of predictions changed: the outputs stayed at the base model's
TRAINS_ON = ("adapters on a group-balanced 60% of validation; the rest of validation picks the epoch")


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


def pissa_init(layer: nn.Module) -> None:
    """PiSSA on one peft LoRA layer (linear or conv), in place: A, B from the top-r singular
    triplets of the base weight, the base weight replaced by the residual (peft's
    `LoraLayer.pissa_init` for linear layers, the conv kernel flattened to out x in·kh·kw)."""
    name = "default"
    base = layer.get_base_layer()
    r, scale = layer.r[name], layer.scaling[name]
    w = base.weight.data.to(torch.float32)
    flat = w.reshape(w.shape[0], -1)
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)
    s_r = s[:r] / scale
    b = u[:, :r] @ torch.diag(torch.sqrt(s_r))
    a = torch.diag(torch.sqrt(s_r)) @ vh[:r]
    r_eff = a.shape[0]  # a layer narrower than r keeps only its min(out, in) directions; the rest stays 0
    a_w, b_w = layer.lora_A[name].weight, layer.lora_B[name].weight
    with torch.no_grad():
        a_w.zero_()
        b_w.zero_()
        a_w[:r_eff].copy_(a.reshape((r_eff,) + tuple(a_w.shape[1:])))
        b_w[:, :r_eff].copy_(b.reshape((b_w.shape[0], r_eff) + tuple(b_w.shape[2:])))
        base.weight.data = (flat - scale * b @ a).reshape(w.shape).to(base.weight.dtype)


def with_adapters(base: nn.Module, rank: int, alpha: float, init: str = "pissa", adapt_last: bool = False) -> Adapted:
    """LoRA adapters (peft) on the linear and conv layers of `base` (the last one only with
    adapt_last); only they are trainable. peft is imported here: it loads transformers,
    seconds that nothing else should pay."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    if rank < 1 or alpha <= 0 or init not in INITS:
        raise ValueError(f"BA-LoRA needs rank >= 1, alpha > 0 and init in {INITS} (got {rank}, {alpha}, {init!r})")
    layers = scoped_layers(base, "all")
    targets = [name for name, _ in (layers if adapt_last else layers[:-1])]
    if not targets:
        raise ValueError("BA-LoRA: the model has no linear/conv layer before its last one to adapt (use adapt_last=1)")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    model = get_peft_model(base, config)
    if init == "pissa":
        for module in model.modules():
            if isinstance(module, LoraLayer):
                pissa_init(module)
    return Adapted(model)


class BALoRALoss:
    """loss_fn: CE + λ_c consistency with the base logits (by example id) + λ_d diversity + λ_s SVD."""

    def __init__(self, base_logits_by_id: torch.Tensor, lambda_consistency: float, lambda_diversity: float,
                 lambda_svd: float, svd_k: int, kind: str = "mse"):
        if kind not in CONSISTENCY:
            raise ValueError(f"BA-LoRA consistency must be one of {CONSISTENCY}, got {kind!r}")
        self.base = base_logits_by_id
        self.lambdas = {"consistency": lambda_consistency, "diversity": lambda_diversity, "svd": lambda_svd}
        self.svd_k, self.kind = svd_k, kind

    def terms(self, logits: torch.Tensor, batch_ids: np.ndarray) -> dict[str, torch.Tensor]:
        """The regularisers whose λ is not 0 (a term switched off is not computed at all)."""
        fns = {"consistency": lambda: consistency(logits, self.base[torch.as_tensor(batch_ids)].to(logits.device),
                                                  self.kind),
               "diversity": lambda: diversity(logits), "svd": lambda: svd_share(logits, self.svd_k)}
        return {name: fns[name]() for name, lam in self.lambdas.items() if lam}

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, batch_ids: np.ndarray) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        for name, value in self.terms(logits, batch_ids).items():
            loss = loss + self.lambdas[name] * value
        return loss


def warmup_cosine(total: int, warmup_ratio: float = WARMUP_RATIO):
    """The lr multiplier of HF's cosine schedule with linear warm-up (get_cosine_schedule_with_warmup):
    step/w for the first w = ceil(ratio · total) steps, then 0.5 (1 + cos(π · progress))."""
    warm = math.ceil(warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warm:
            return step / max(1, warm)
        progress = (step - warm) / max(1, total - warm)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return factor


@torch.no_grad()
def output_distance(model: nn.Module, base_logits: np.ndarray, images: np.ndarray, idx: np.ndarray,
                    device: torch.device) -> dict:
    """How far the adapted outputs moved from the base model's on examples idx: the official
    consistency distance (MSE between L2-normalised logits) and the share of changed predictions."""
    logits = torch.as_tensor(predict_logits(model, images, idx, device))
    base = torch.as_tensor(base_logits)
    return {"output_distance_from_base": float(consistency(logits, base, "mse")),
            "predictions_changed_from_base": float((logits.argmax(1) != base.argmax(1)).float().mean())}


def fit_adapters(ctx: MethodContext, params: dict) -> tuple[Adapted, int, dict]:
    """The adapted ERM model at its best epoch on the selection part of validation, the steps
    taken and what was chosen."""
    data = ctx.data
    seed = int(params.get("seed", ctx.cfg.train.seed))
    fit_idx, sel_idx = val_fit_select(ctx, params["fit_fraction"], seed)
    base = load_erm(ctx)
    base_logits = torch.zeros(len(data.labels), data.n_classes)
    both = np.concatenate([fit_idx, sel_idx])
    base_logits[torch.as_tensor(both)] = torch.as_tensor(predict_logits(base, data.images, both, ctx.device))
    alpha = params["alpha"] or float(params["rank"])
    torch.manual_seed(seed)
    model = with_adapters(base, params["rank"], alpha, params["init"], bool(params["adapt_last"])).to(ctx.device)
    loss = BALoRALoss(base_logits, params["lambda_consistency"], params["lambda_diversity"], params["lambda_svd"],
                      params["svd_k"], params["consistency"])
    steps = params["steps"] or ctx.erm_steps
    cfg = TrainConfig(lr=params["lr"], weight_decay=0.0, batch_size=params["batch_size"], seed=seed, steps=steps)
    selector = EpochSelector(lambda m: ctx.val_score(m, sel_idx))
    done = train(model, data.images, data.labels, fit_idx, cfg, ctx.device, loss_fn=loss, on_epoch=selector,
                 report=scaled(ctx.report, "BA-LoRA: "), lr_lambda=warmup_cosine(steps))
    keep_best(selector, model, done, math.ceil(len(fit_idx) / cfg.batch_size))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {**selector.info(), "selected_by": "worst-group accuracy (ties: average accuracy) on the selection "
                                              "part of validation",
            "trainable_params": trainable, "total_params": sum(p.numel() for p in model.parameters()),
            "n_val_fit": len(fit_idx), "n_val_select": len(sel_idx), "alpha_used": alpha,
            **output_distance(model, base_logits[torch.as_tensor(sel_idx)].numpy(), data.images, sel_idx, ctx.device)}
    return model, done, info


def signatures(info: dict) -> list[str]:
    """BA-LoRA's failure signature: the adapted model's predictions (selection part of
    validation) stayed at the base model's, so the fine-tuning corrected nothing."""
    changed = info.get("predictions_changed_from_base")
    if changed is not None and changed <= UNCHANGED:
        return [f"outputs stayed at the base model's ({changed:.1%} of predictions changed)"]
    return []


def row(config: dict, info: dict) -> dict:
    """One finished BA-LoRA / LoRA run: the distance of its outputs from the base model's, its
    regulariser weights and its failure signature."""
    return {"seed": config["params"].get("seed"),
            "λ consistency / diversity / SVD": "{} / {} / {}".format(
                info["lambda_consistency"], info["lambda_diversity"], info["lambda_svd"]),
            "output distance from base": info.get("output_distance_from_base"),
            "predictions changed": info.get("predictions_changed_from_base"),
            "selected epoch": info.get("selected_epoch"),
            "failure signatures": ", ".join(signatures(info)) or "none"}


CAPTION = ("Distance: the consistency regulariser's MSE between L2-normalised logits; predictions changed: the "
           "share of predictions that differ from the base model's, on the part of validation not trained on. "
           "Outputs that stay at the base model's corrected nothing.")
REPORT = Report("BA-LoRA: how far the adapted outputs moved from the base model (validation)", CAPTION, row,
                percent=("predictions changed",))
LORA_REPORT = Report("LoRA (every λ = 0): how far the adapted outputs moved from the base model (validation)",
                     CAPTION, row, percent=("predictions changed",))


OPTIONS = {"rank": Option(8, ge=1, help="rank of the LoRA adapters"),
           "alpha": Option(0.0, ge=0, help="LoRA alpha (0: alpha = rank, peft's scale 1)"),
           "init": Option("pissa", choices=INITS, help="adapter initialisation (official: PiSSA)"),
           "adapt_last": Option(0, ge=0, le=1, help="1: adapt the final layer too"),
           "lr": Option(2e-5, gt=0, help="learning rate of the adapters"),
           "batch_size": Option(128, ge=1, help="examples per batch"),
           "steps": Option(0, ge=0, help="optimizer steps (0: the ERM step budget)"),
           "lambda_consistency": Option(1e-4, ge=0, help="λ_c: consistency with the base model's outputs"),
           "lambda_diversity": Option(3e-4, ge=0, help="λ_d: diversity regulariser"),
           "lambda_svd": Option(1e-4, ge=0, help="λ_s: SVD top-k share regulariser"),
           "svd_k": Option(3, ge=1, help="k of the SVD regulariser"),
           "consistency": Option("mse", choices=CONSISTENCY, help="consistency distance (official: mse)"),
           "fit_fraction": Option(0.6, gt=0, lt=1, help="share of validation the adapters fit on")}
SHOWN = ("rank", "alpha", "init", "adapt_last", "lr", "batch_size", "lambda_consistency", "lambda_diversity",
         "lambda_svd", "svd_k", "consistency", "fit_fraction")


@register("ba_lora", "BA-LoRA (bias-alleviating LoRA fine-tuning)", group_info="no/yes", removes=False,
          trains_on=TRAINS_ON, requires=val_groups_reason, options=OPTIONS, report=REPORT)
def ba_lora(ctx: MethodContext, params: dict) -> MethodResult:
    model, steps, info = fit_adapters(ctx, params)
    info.update({k: params[k] for k in SHOWN})
    return MethodResult(model.merged(), np.zeros(0, np.int64), steps, info)


@register("lora", "LoRA (BA-LoRA with every λ = 0)", group_info="no/yes", removes=False,
          trains_on=TRAINS_ON, requires=val_groups_reason, report=LORA_REPORT,
          options={k: v for k, v in OPTIONS.items() if not k.startswith("lambda_") and k not in ("svd_k", "consistency")})
def lora(ctx: MethodContext, params: dict) -> MethodResult:
    """Plain LoRA on the same data, initialisation and schedule: BA-LoRA's control."""
    full = {**{k: o.default for k, o in OPTIONS.items()}, **params, "lambda_consistency": 0.0, "lambda_diversity": 0.0, "lambda_svd": 0.0}
    model, steps, info = fit_adapters(ctx, full)
    info.update({k: full[k] for k in SHOWN})
    return MethodResult(model.merged(), np.zeros(0, np.int64), steps, info)
