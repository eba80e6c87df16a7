"""benchmarks/fidelity.py: what the attribution benchmark keeps of a variant that stopped early,
and how its follow-up run (--follow-up, the 80k mode) picks its rows and extrapolates a peer."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fidelity import (best_rows, extrapolated, follow_up_variants, member_record, member_scores,
                                 save_member_record)


def row(lds_t: float, members: int = 5, per_model_s: float = 10.0, cpu: float = 8.0) -> dict:
    return {"lds_t": lds_t, "members": members, "per_model_s": per_model_s, "per_model_cpu_s": cpu}


SUMMARY = {"models": 5, "n_train": 20_000, "targets": 1000, "variants": {
    "factored/auto": row(0.20), "factored/last": row(0.15), "factored/all": row(0.21),
    "traker": row(0.22, per_model_s=600.0, cpu=900.0), "kronfluence": row(0.30, members=1),
    "dattri": row(0.10)}}


def test_best_rows_count_only_complete_rows():
    # kronfluence's 0.30 is an LDS at T = 1 (one member of five): not comparable, not picked
    assert best_rows(SUMMARY) == ("factored/all", "traker")


def test_follow_up_runs_default_best_option_and_best_peer():
    assert follow_up_variants(SUMMARY, "factored/auto") == ["factored/auto", "factored/all", "traker"]
    only_default = {**SUMMARY, "variants": {"factored/auto": row(0.2), "dattri": row(0.1, members=2),
                                            "traker": row(0.3, members=1)}}
    # no peer finished every member: the one with the most members; no repeated default
    assert follow_up_variants(only_default, "factored/auto") == ["factored/auto", "dattri"]


def test_extrapolation_is_linear_in_n_at_the_same_targets():
    epoch = {"wall": 20.0, "cpu": 30.0}
    est = extrapolated(SUMMARY, "traker", 80_000, 1000, epoch)
    assert est["per_model_s"] == pytest.approx(2400.0) and est["per_model_cpu_s"] == pytest.approx(3600.0)
    assert est["epoch_ratio"] == pytest.approx(120.0) and est["epoch_ratio_cpu"] == pytest.approx(120.0)
    assert "extrapolated" in est["from"] and "20000" in est["from"]
    assert extrapolated(SUMMARY, "traker", 80_000, 2667, epoch) is None  # other targets: not linear in n alone
    assert extrapolated(SUMMARY, "nobody", 80_000, 1000, epoch) is None


def test_member_records_are_reused_only_for_the_same_spec(tmp_path):
    spec = {"root": "/d", "trak": {"scope": "all"}, "targets": 10, "checkpoint": "/m/0.pt", "member": 0,
            "name": "x", "out": str(tmp_path)}
    result = {"seconds": [1.5], "cpu_seconds": [1.0], "peak_mb": 900.0, "baseline_mb": 700.0}
    save_member_record(tmp_path, 0, spec, result)
    assert member_record(tmp_path, 0, spec) is None  # the scores file is missing
    np.save(tmp_path / "scores_0.npy", np.zeros((2, 3), np.float32))
    assert member_record(tmp_path, 0, {**spec, "name": "renamed"}) == result  # the name does not make scores
    assert member_record(tmp_path, 0, {**spec, "trak": {"scope": "last"}}) is None
    assert member_record(tmp_path, 0, {**spec, "checkpoint": "/m/1.pt"}) is None


def test_member_scores_are_the_first_and_the_mean(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3)]
    for t, a in enumerate(arrays):
        np.save(tmp_path / f"scores_{t}.npy", a)
    first, mean = member_scores(tmp_path, 2)  # members 0 and 1 only (the third did not finish)
    np.testing.assert_array_equal(first, arrays[0])
    np.testing.assert_allclose(mean, (arrays[0] + arrays[1]) / 2, rtol=1e-6)
