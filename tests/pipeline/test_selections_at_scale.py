"""The analysis's selection step never holds a validation x train matrix (issue 20).

A factored analysis of 3,000 validation and 40,000 training examples (random factors, k = 8,
T = 2: nothing trained) whose dense score matrix would be 480 MB in float32: `write_selections`
must finish within a memory limit the test sets at a tenth of that, counted by tracemalloc
(numpy's allocations are traced), and write train-sized results.
"""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from core.attribution.factors import FactorStore, open_scores
from core.attribution.store import save_store
from core.data.dataset import Dataset
from core.pipeline.analysis import write_selections
from core.runs.store import RunStore

N_TRAIN, N_VAL, K, MEMBERS = 40_000, 3_000, 8, 2


def dataset(rng: np.random.Generator) -> Dataset:
    """Two classes, four groups, two attributes; images are not needed by the selections."""
    total = N_TRAIN + N_VAL
    labels = rng.integers(0, 2, total)
    place = rng.integers(0, 2, total)
    meta = pd.DataFrame({"filename": [f"x{i}.png" for i in range(total)], "place": np.where(place, "water", "land"),
                         "size": rng.choice(["small", "large"], total)})
    split = np.array(["train"] * N_TRAIN + ["val"] * N_VAL)
    return Dataset(Path("."), meta, np.zeros((total, 1, 1, 3), np.uint8), labels, ["a", "b"], 2 * labels + place,
                   ["a on land", "a on water", "b on land", "b on water"], split, ["place", "size"])


def factored_analysis(folder: Path, rng: np.random.Generator) -> None:
    for t in range(MEMBERS):
        save_store(folder / f"ensemble/features_{t}", {"seed": t}, rng.normal(size=(N_TRAIN, K)).astype(np.float32),
                   rng.uniform(0.1, 0.9, N_TRAIN).astype(np.float32))
    store = FactorStore(folder / "ensemble/factors", {"n": N_TRAIN, "m": N_VAL, "members": [
        {"features": f"features_{t}", "seed": t} for t in range(MEMBERS)]})
    for t in range(MEMBERS):
        store.save_q(t, rng.normal(size=(N_VAL, K)))
    store.finish()


def test_selections_of_a_large_factored_analysis_stay_within_a_tenth_of_the_dense_matrix(tmp_path):
    rng = np.random.default_rng(0)
    data = dataset(rng)
    run = RunStore(tmp_path).create("analysis", {})
    factored_analysis(run.path, rng)
    logits = rng.normal(size=(N_VAL, 2)).astype(np.float32)
    limit = N_VAL * N_TRAIN * 4 // 10
    tracemalloc.start()
    try:
        write_selections(run, data, open_scores(run.path), logits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"the selections peaked at {peak / 1e6:.0f} MB, over the limit of {limit / 1e6:.0f} MB"
    assert run.read_array("alignment").shape == run.read_array("auto_alignment").shape == (N_TRAIN,)
    assert run.read_array("auto_groups").shape == (N_VAL,)
