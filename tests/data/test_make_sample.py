"""The sample generator: the built-in binary sample unchanged, and its N-class variant with
the same kind of planted shortcut (place agrees with the class's half in 95% of train)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import PROJECT_ROOT
from sample_data.make_sample import AGREEMENT, CLASSES, generate, half

SAMPLE = PROJECT_ROOT / "sample_data"


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".csv", ".jpg")}


def test_default_is_the_built_in_sample_byte_for_byte(tmp_path):
    generate(tmp_path)
    assert digest(tmp_path) == digest(SAMPLE) and len(digest(tmp_path)) == 4201


@pytest.mark.parametrize("n_classes", [3, 10])
def test_n_classes_have_2n_groups_and_the_planted_shortcut(tmp_path, n_classes):
    generate(tmp_path, seed=1, scale=0.4, n_classes=n_classes)
    meta = pd.read_csv(tmp_path / "metadata.csv")
    assert sorted(meta["label"].unique()) == sorted(CLASSES[:n_classes])
    assert meta["group"].nunique() == 2 * n_classes
    assert (meta["group"] == meta["label"] + " on " + meta["place"]).all()
    for split in ("val", "test"):  # balanced over the 2N groups
        counts = meta[meta.split == split]["group"].value_counts()
        assert len(counts) == 2 * n_classes and counts.max() - counts.min() <= 1
    train = meta[meta.split == "train"]
    agrees = train["place"] == np.where([half(CLASSES.index(c), n_classes) for c in train["label"]], "water", "land")
    honest = train["source"] != "crowd"
    assert abs(agrees[honest].mean() - AGREEMENT) < 0.03
    assert agrees[~honest].all() and (~honest).sum() == round(120 * 0.4)  # crowd: labelled by the place
    assert "crowd" not in set(meta[meta.split != "train"]["source"])


def test_too_many_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"--classes must be between 2 and {len(CLASSES)}, got 11"):
        generate(tmp_path, n_classes=11)


def test_many_valued_bias_has_random_other_colours_and_uniform_val_test(tmp_path):
    """--bias-values K --conflict P: each class has its own colour in train except a P share in
    one of the K - 1 other colours drawn at random; val and test colours independent of the class."""
    from sample_data.make_sample import COLOUR_SET
    generate(tmp_path, seed=3, scale=0.5, n_classes=4, bias_values=5, conflict=0.2)
    meta = pd.read_csv(tmp_path / "metadata.csv")
    names = list(COLOUR_SET)
    own = meta["label"].map(CLASSES.index) == meta["colour"].map(names.index)
    assert set(meta["colour"]) == set(names[:5]) and (meta["group"] == meta["label"] + " in " + meta["colour"]).all()
    train = meta[meta.split == "train"]
    conflicting = train[~own[train.index]]
    assert abs(len(conflicting) / len(train) - 0.2) < 0.05
    # a conflicting image's colour is any other colour, not one fixed "opposite" colour per class
    assert conflicting.groupby("label")["colour"].nunique().min() >= 3
    for split in ("val", "test"):  # every (class, colour) pair equally often
        counts = meta[meta.split == split]["group"].value_counts()
        assert len(counts) == 4 * 5 and counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="--bias-values must be between the number of classes"):
        generate(tmp_path / "bad", n_classes=4, bias_values=3)
