"""PGD's own report (Ahn et al. 2023): where the sampling mass went and the reversed-shortcut
signature, as the Compare page shows them."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.methods.base import Report

REVERSED_GAP = 0.30  # minority groups ahead of majority groups by this much (validation): reversed shortcut


def majority_groups(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per example: True when its group is its class's most frequent group among `groups`
    (the bias-aligned group of the class), False for the other (bias-conflicting) groups."""
    frame = pd.DataFrame({"g": groups, "y": labels})
    counts = frame.groupby(["y", "g"]).size()
    top = counts.groupby(level=0).idxmax().map(lambda yg: yg[1])
    return np.isin(groups, top.to_numpy())


def sampling_summary(h: np.ndarray, groups: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """Where the sampling mass goes: per group its share of h and of the training set, and the
    mass on the conflicting (non-majority) groups over their share of the training set, and the
    effective number of distinct examples the resampled batches draw from (1 / Σ h_i²: N for
    uniform h, about the number of conflicting examples when they hold nearly all the mass)."""
    major = majority_groups(groups, labels)
    present = np.unique(groups)
    share = (~major).mean()
    return {"importance_share_by_group": {names[g]: float(h[groups == g].sum()) for g in present},
            "train_share_by_group": {names[g]: float((groups == g).mean()) for g in present},
            "majority_groups": sorted({names[g] for g in np.unique(groups[major])}),
            "conflicting_train_share": float(share),
            "conflicting_mass": float(h[~major].sum()),
            "conflicting_mass_over_share": float(h[~major].sum() / share) if share else None,
            "effective_sample_size": float(1.0 / np.square(h).sum())}


def signatures(info: dict) -> list[str]:
    """PGD's failure signature on a finished run: the reversed shortcut, i.e. the conflicting
    (minority) groups beat the majority groups on validation by more than REVERSED_GAP."""
    hi, lo = info.get("val_acc_majority_groups"), info.get("val_acc_minority_groups")
    if hi is not None and lo is not None and lo - hi > REVERSED_GAP:
        return [(f"reversed shortcut: minority groups {lo:.0%} vs majority groups {hi:.0%} "
                 "on validation (resampling taught the opposite bias)")]
    return []


def row(config: dict, info: dict) -> dict:
    """One finished PGD run: the sampling mass on the conflicting groups against their training
    share, validation accuracy of majority vs minority groups, and the reversed-shortcut signature."""
    return {"seed": config["params"].get("seed"),
            "conflicting train share": info.get("conflicting_train_share"),
            "sampling mass on them": info.get("conflicting_mass"),
            "mass / share": info.get("conflicting_mass_over_share"),
            "effective examples (1/Σh²)": info.get("effective_sample_size"),
            "val acc majority groups": info.get("val_acc_majority_groups"),
            "val acc minority groups": info.get("val_acc_minority_groups"),
            "failure signatures": ", ".join(signatures(info)) or "none"}


REPORT = Report("PGD: where the sampling mass went and its failure signature (validation)",
                "PGD resamples toward the examples its GCE-trained biased model gets wrong. With a many-valued "
                "bias (a conflicting example in a random other colour) that removes the shortcut; with a "
                "two-valued bias every conflicting example carries the other value, and the debiased model "
                "learns the reversed shortcut: minority groups far above majority groups.", row,
                percent=("conflicting train share", "sampling mass on them"))
