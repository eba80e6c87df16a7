"""FFW's own report (Nahon et al. 2024): its failure signatures, as the Compare page shows them."""
from __future__ import annotations

from core.methods.base import Report

COLLAPSE = 0.10  # task accuracy lost (validation, absolute) that counts as a collapse
BIAS_KEPT = 0.05  # bias-head accuracy still within this of its value before pruning: bias kept
NEAR_ZERO = 0.01  # overall sparsity below this: (almost) nothing pruned


def signatures(info: dict) -> list[str]:
    """Which of the paper's failure signatures a finished FFW run shows (the selection part of
    validation): task accuracy collapses, the bias stays extractable (by a head retrained on the
    pruned features), nothing is pruned."""
    out = []
    if info["task_val_acc_after"] < info["task_val_acc_before"] - COLLAPSE:
        out.append("task accuracy collapsed")
    if info["bias_head_val_acc_after_retrained"] >= info["bias_head_val_acc_before"] - BIAS_KEPT:
        out.append("bias still extractable")
    if info["sparsity"] < NEAR_ZERO:
        out.append("sparsity near 0")
    return out


def row(config: dict, info: dict) -> dict:
    """One finished FFW run: sparsity, task and bias-head accuracy before/after pruning (the
    selection part of validation), the epoch kept and the failure signatures it shows."""
    return {"seed": config["params"].get("seed"), "structure": info["structure"],
            "bias attribute": info["bias_attribute"], "sparsity": info["sparsity"],
            "task acc before": info["task_val_acc_before"], "task acc after": info["task_val_acc_after"],
            "bias acc before": info["bias_head_val_acc_before"],
            "bias acc after (retrained head)": info["bias_head_val_acc_after_retrained"],
            "kept epoch": info.get("selected_epoch"), "gate epochs": info.get("gate_epochs_run"),
            "failure signatures": ", ".join(signatures(info)) or "none"}


REPORT = Report("FFW: pruning and its failure signatures (validation)",
                "The paper's failure signatures: task accuracy collapses, the bias stays extractable "
                "(a head retrained on the pruned features still predicts it), or almost nothing is pruned. "
                "Gates and bias head are fitted on a group-balanced part of validation; these numbers are "
                "on the rest of it.", row)
