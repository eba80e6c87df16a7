"""The peers benchmarks/attribution.py compares against, each run as its documentation says on
one of our trained models: traker 0.3.2 (TRAKer), kronfluence 1.0.1 (EK-FAC influence
functions) and dattri 0.3.0 (TRAKAttributor). Benchmark-only extras: pip install -e '.[bench]'.

Every function fills `out` (val targets x train, float32) with scores whose sign means the
same as ours: positive = training on the example raises the target's correct-class margin.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.data.images import to_tensor

BATCH = 128


def _tensors(data, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return to_tensor(data.images[idx]), torch.as_tensor(data.labels[idx], dtype=torch.int64)


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p_y - log(1 - p_y), per example (TRAK's model output function)."""
    mask = torch.arange(logits.shape[-1]) == labels[..., None]  # no one_hot: it calls .item(), which vmap refuses
    return (logits * mask).sum(-1) - logits.masked_fill(mask, -torch.inf).logsumexp(dim=-1)


def traker_scores(model, data, train_idx, val_idx, spec: dict, t: int, out: np.ndarray) -> None:
    """TRAKer (traker 0.3.2) on CPU: FunctionalGradientComputer + BasicProjector (dense normal).

    Its ridge is set to ours, lambda_reg = ridge · tr(ΦᵀΦ)/k (traker's default is 0, which
    leaves ΦᵀΦ singular when n < k; the "traker/lambda0" variant keeps that default).
    """
    from trak import TRAKer

    save_dir = Path(spec["out"]) / f"traker_{t}"
    shutil.rmtree(save_dir, ignore_errors=True)  # a fresh TRAKer: nothing reused from an earlier run
    tr = TRAKer(model=model, task="image_classification", train_set_size=len(train_idx), device="cpu",
                save_dir=str(save_dir), proj_dim=spec["trak"]["proj_dim"],
                use_half_precision=False, projector_seed=t, logging_level=40)
    tr.load_checkpoint(model.state_dict(), model_id=0)
    for s in range(0, len(train_idx), BATCH):
        idx = train_idx[s:s + BATCH]
        tr.featurize(batch=_tensors(data, idx), num_samples=len(idx))
    grads = torch.as_tensor(np.asarray(tr.saver.current_store["grads"]), dtype=torch.float64)
    tr.score_computer.lambda_reg = spec["trak"]["ridge"] * float(grads.pow(2).sum()) / grads.shape[1]
    del grads
    tr.finalize_features()
    tr.start_scoring_checkpoint(exp_name="bench", checkpoint=model.state_dict(), model_id=0, num_targets=len(val_idx))
    for s in range(0, len(val_idx), BATCH):
        idx = val_idx[s:s + BATCH]
        tr.score(batch=_tensors(data, idx), num_samples=len(idx))
    out[:] = np.asarray(tr.finalize_scores(exp_name="bench")).T


class _Pairs(torch.utils.data.Dataset):
    """(image, label) pairs of some examples, as the peers' data loaders expect."""

    def __init__(self, data, idx: np.ndarray):
        self.x, self.y = _tensors(data, idx)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def kronfluence_scores(model, data, train_idx, val_idx, spec: dict, t: int, out: np.ndarray) -> None:
    """kronfluence 1.0.1: EK-FAC factors fitted on the train split (its default strategy and
    damping), then pairwise influence of every train example on each target's margin, over all
    Linear/Conv2d layers. The measurement is -margin, as in kronfluence's CIFAR-10 example, so
    a positive score means that training on the example raises the target's margin."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments
    from kronfluence.task import Task

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
            x, y = batch
            logits = model(x)
            if sample:  # the true Fisher: labels drawn from the model's own predictions
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return F.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model) -> torch.Tensor:
            x, y = batch
            return -_margin(model(x), y).sum()

    save_dir = Path(spec["out"]) / f"kronfluence_{t}"
    shutil.rmtree(save_dir, ignore_errors=True)
    task = Classification()
    model = prepare_model(model.eval(), task)
    analyzer = Analyzer(analysis_name="bench", model=model, task=task, cpu=True, disable_tqdm=True,
                        output_dir=str(save_dir))
    train = _Pairs(data, train_idx)
    analyzer.fit_all_factors(factors_name="ekfac", dataset=train, per_device_batch_size=BATCH,
                             factor_args=FactorArguments(strategy="ekfac"), overwrite_output_dir=True)
    analyzer.compute_pairwise_scores(scores_name="bench", factors_name="ekfac", query_dataset=_Pairs(data, val_idx),
                                     train_dataset=train, per_device_query_batch_size=BATCH,
                                     per_device_train_batch_size=2 * BATCH, overwrite_output_dir=True)
    out[:] = analyzer.load_pairwise_scores("bench")["all_modules"].numpy()


def dattri_scores(model, data, train_idx, val_idx, spec: dict, t: int, out: np.ndarray) -> None:
    """dattri 0.3.0: TRAKAttributor on one checkpoint, all parameters, its dense random
    projection to our k, the margin as target and loss function and p(correct) for Q, as in
    its documentation; its default regularization (0)."""
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    def f(params, pair):  # the margin log p - log(1 - p) of one example
        x, y = pair
        return _margin(torch.func.functional_call(model, params, x.unsqueeze(0)), y.unsqueeze(0)).squeeze(0)

    def m(params, pair):  # the probability of the correct class
        x, y = pair
        logits = torch.func.functional_call(model, params, x.unsqueeze(0))
        return torch.exp(-F.cross_entropy(logits, y.unsqueeze(0)))

    task = AttributionTask(loss_func=f, model=model.eval(), checkpoints=model.state_dict())
    attributor = TRAKAttributor(task=task, correct_probability_func=m, device="cpu",
                                projector_kwargs={"proj_dim": spec["trak"]["proj_dim"], "proj_seed": t,
                                                  "device": "cpu"})
    loader = lambda idx: torch.utils.data.DataLoader(_Pairs(data, idx), batch_size=BATCH, shuffle=False)  # noqa: E731
    attributor.cache(loader(train_idx))
    with torch.no_grad():
        out[:] = attributor.attribute(loader(val_idx)).T.numpy()


PEERS = {"traker": traker_scores, "kronfluence": kronfluence_scores, "dattri": dattri_scores}
