"""Ground truth for the linear datamodeling score: models actually trained on random subsets.

`subset_margins` trains one model per random 50% subset of the train split (the same recipe
as the ensemble members) and records its correct-class margin on every validation example;
the result is cached, so every attribution variant is scored against the same subset models.
`core.attribution.lds.lds` turns (scores, masks, margins) into the LDS.

Standalone: `python -m benchmarks.lds --data DIR --count 50` trains (or loads) them and prints
the LDS of every finished analysis in --workdir that uses the same data, from its
factored scores (or an older analysis's scores.npy).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.train.training import fit
from core.attribution.gradients import margin
from core.attribution.factors import open_scores
from core.attribution.lds import lds, subset_masks
from core.config import AnalysisConfig, DataConfig, TrainConfig, from_dict, to_dict
from core.data.dataset import Dataset, load_dataset
from core.progress import silent
from core.train.training import predict_logits


def subset_margins(data: Dataset, cfg: AnalysisConfig, count: int, seed: int, cache: Path,
                   fraction: float = 0.5, log=print) -> tuple[np.ndarray, np.ndarray]:
    """(masks (count, n_train) bool, margins (count, n_val)); subset s trains with seed 10_000·seed + s.

    Each subset model's margins are cached on their own (the masks' first rows do not depend on
    `count`), so asking for more subset models later trains only the new ones.
    """
    key = hashlib.sha1(json.dumps([to_dict(cfg.model), to_dict(cfg.train), cfg.data.root, seed,
                                   fraction, len(data.idx("train"))]).encode()).hexdigest()[:12]
    folder = Path(cache) / f"lds_{key}"
    folder.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = data.idx("train"), data.idx("val")
    masks = subset_masks(len(train_idx), count, fraction, seed)
    y_val = torch.as_tensor(data.labels[val_idx], dtype=torch.int64)
    margins = np.zeros((count, len(val_idx)), np.float32)
    start = time.perf_counter()
    for s, mask in enumerate(masks):
        path = folder / f"margins_{s}.npy"
        if not path.exists():
            model = fit(data, train_idx[mask], cfg, replace(cfg.train, seed=10_000 * seed + s),
                        torch.device("cpu"), silent).model
            logits = torch.from_numpy(predict_logits(model, data.images, val_idx, torch.device("cpu")))
            np.save(path, margin(logits, y_val).numpy())
            log(f"  LDS subset model {s + 1}/{count} ({time.perf_counter() - start:.0f} s)")
        margins[s] = np.load(path)
    return masks, margins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DataConfig().root)
    parser.add_argument("--workdir", type=Path, required=True, help="a run store (LDS of its analyses)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    args = parser.parse_args()
    cfg = AnalysisConfig(data=DataConfig(str(Path(args.data).resolve())),
                         train=replace(TrainConfig(), epochs=args.epochs, device="cpu"))
    data = load_dataset(cfg.data, cache_dir=args.workdir / "cache")
    masks, margins = subset_margins(data, cfg, args.count, args.seed, args.workdir / "lds")
    for cfg_path in sorted(args.workdir.glob("runs/analysis-*/config.json")):
        run_cfg = from_dict(AnalysisConfig, json.loads(cfg_path.read_text()))
        try:
            scores = open_scores(cfg_path.parent)  # factors, or an older analysis's scores.npy
        except (FileNotFoundError, ValueError):
            continue  # not finished
        if run_cfg.data.root == cfg.data.root:
            print(f"{cfg_path.parent.name}: LDS {lds(scores, masks, margins):.3f} "
                  f"({run_cfg.trak.projector}/{run_cfg.trak.scope}, T={run_cfg.trak.n_models})")


if __name__ == "__main__":
    main()
