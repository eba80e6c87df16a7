"""Readable distributions (core/views/distributions.py), the numpy Jaccard matrix and the store's
version key, each against a direct computation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.runs.store import RunStore
from core.views import distributions as dist, runs as vr


def test_clipped_histogram_counts_the_tails_in_labelled_edge_bins():
    values = np.arange(-1000, 1001) * 1e-7  # 2,001 evenly spaced values: the quantiles are known
    colours = np.where(np.arange(len(values)) % 2 == 0, "a", "b")
    h = dist.histogram(values, colours, bins=60, tail=0.005)
    tails = dist.tail_counts(h)
    assert set(tails) == {"below", "above"}, "no tail bars"
    # 0.5% of the 2,000 gaps: the 10 lowest and the 10 highest lie outside the bins
    assert tails["below"]["count"] == 10 and tails["above"]["count"] == 10
    assert tails["below"]["right"] == pytest.approx(-990e-7) and tails["above"]["left"] == pytest.approx(990e-7)
    assert tails["below"]["left"] == pytest.approx(-1000e-7) and tails["above"]["right"] == pytest.approx(1000e-7)
    body = h[h["side"] == ""]
    assert body["width"].to_numpy() == pytest.approx(np.full(120, 1980e-7 / 60))
    assert h["count"].sum() == len(values)
    assert h.groupby("colour")["count"].sum().to_dict() == {"a": 1001, "b": 1000}
    # each bin counts exactly the values inside it (the last bin is closed on the right)
    for row in body[body["colour"] == "a"].itertuples():
        inside = (values >= row.left) & ((values < row.right) | (row.right == body["right"].max()) & (values <= row.right))
        assert row.count == (inside & (colours == "a")).sum()


def test_clipped_bins_make_a_heavy_tailed_distribution_readable():
    """A_i as the issue saw it: most values within a few 1e-7, a few out to 5e-5. Linear bins
    over the full range put nearly everything in one bar; clipped bins spread the bulk."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 2e-7, 50_000), rng.uniform(-7e-5, 5e-5, 100)])
    colours = np.zeros(len(values), dtype=object)
    linear = dist.histogram(values, colours, bins=60)
    clipped = dist.histogram(values, colours, bins=60, tail=0.005)
    assert linear["count"].max() > 0.5 * len(values)
    body = clipped[clipped["side"] == ""]
    assert body["count"].max() < 0.1 * len(values) and (body["count"] > 0).sum() > 40
    assert clipped["count"].sum() == len(values)


def test_unit_brings_the_bulk_into_one_to_a_thousand():
    for scale in (3e-7, 4e-5, 2e-3, 5.0, 7e4):
        values = np.random.default_rng(1).normal(0, scale, 1000)
        factor, label = dist.unit(values)
        assert 1 <= np.quantile(np.abs(values * factor), 0.99) < 1000
        exponent = -round(math.log10(factor))
        assert exponent % 3 == 0 and label == ("" if exponent == 0 else "×10" + str(exponent).translate(dist.SUPERSCRIPT))
    assert dist.unit(np.full(4, 3e-7)) == (1e9, "×10⁻⁹")
    assert dist.unit(np.zeros(3)) == (1.0, "")


def test_percentiles_and_the_range_they_keep():
    values = np.array([5.0, -1.0, 3.0, 3.0, 10.0])
    # below / (n - 1), ties at their mean rank: -1 -> 0, 3 and 3 -> (1 + 2) / 2 / 4, 5 -> 3/4, 10 -> 1
    assert dist.percentiles(values).tolist() == [75.0, 0.0, 37.5, 37.5, 100.0]
    assert dist.percentile_range(values, 0, 100) == (-1.0, 10.0)
    assert dist.percentile_range(np.arange(101.0), 10, 90) == (10.0, 90.0)
    with pytest.raises(ValueError, match="0 <= low <= high <= 100"):
        dist.percentile_range(values, 60, 40)


def test_downsample_keeps_both_extremes_and_an_even_sample():
    rng = np.random.default_rng(2)
    values = rng.standard_t(1, 100_000)
    picked = dist.downsample(values, 5000, 1000)
    assert len(picked) == 5000 == len(set(picked.tolist()))
    ranks = np.empty(len(values), np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    chosen = np.sort(ranks[picked])
    assert chosen[:1000].tolist() == list(range(1000))  # the 1,000 lowest
    assert chosen[-1000:].tolist() == list(range(99_000, 100_000))  # the 1,000 highest
    gaps = np.diff(chosen[1000:-1000])
    assert gaps.max() <= math.ceil(98_000 / 3000) + 1  # the middle: even steps in rank
    assert dist.downsample(values[:10], 50, 5).tolist() == np.argsort(values[:10], kind="stable").tolist()


def test_jaccard_matrix_of_many_runs_equals_set_arithmetic(tmp_path):
    store = RunStore(tmp_path)
    rng = np.random.default_rng(3)
    runs, sets = [], []
    for i in range(7):
        run = store.create("debias", {"i": i})
        ids = rng.choice(5000, int(rng.integers(0, 900)), replace=False) if i else np.array([], np.int64)
        run.write_array("removed_ids", ids)
        runs.append(run)
        sets.append(set(ids.tolist()))
    m = vr.jaccard_matrix(runs)
    for a, sa in zip(runs, sets):
        for b, sb in zip(runs, sets):
            expected = len(sa & sb) / len(sa | sb) if sa | sb else 1.0
            assert m.loc[a.id, b.id] == pytest.approx(expected, abs=1e-12)


def test_store_version_changes_with_every_run_and_status_change(tmp_path):
    store = RunStore(tmp_path)
    v0 = store.version()
    run = store.create("analysis", {})
    v1 = store.version()
    assert v1 != v0 and [r.id for r in store.list()] == [run.id]
    run.set_status(state="running", stage="ERM")
    v2 = store.version()
    assert v2 != v1 and store.version() == v2  # nothing changed: the same key
    other = store.create("debias", {}, parent=run.id)
    assert [r.id for r in store.list("debias", parent=run.id)] == [other.id]
    store.delete(other.id)
    assert store.version() == v2 and [r.id for r in store.list()] == [run.id]
