"""A write failing with ENOSPC mid-featurization: the run is failed with a clear message,
earlier artifacts are intact (and reused when the run resumes after space is freed)."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from core.runs import stages
from core.pipeline.analysis import start_analysis
from core.attribution import store as feature_store
from core.train.checkpoints import load_checkpoint
from core.runs.store import RunStore
from tests.conftest import tiny_config
from tests.dense import dense_scores


class FullDisk:
    """open() for the feature store: files whose path passes `which` fail with ENOSPC on their
    `nth` block of features (a write over 1 KiB, not the .npy header)."""

    def __init__(self, which, nth: int = 1):
        self.which, self.nth, self.blocks, self.failed = which, nth, 0, None

    def __call__(self, path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        if "w" not in mode or not self.which(str(path)):
            return fh
        outer = self

        class Handle:
            def __getattr__(self, name):
                return getattr(fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, data):
                if len(data) > 1024:
                    outer.blocks += 1
                    if outer.blocks >= outer.nth:
                        outer.failed = str(path)
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                return fh.write(data)

        return Handle()


def test_disk_full_while_featurizing(tiny_sample, tiny_analysis, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "work")
    full = FullDisk(lambda path: "features_1" in path)  # once member 1's features are written
    monkeypatch.setattr(feature_store, "open", full, raising=False)
    cfg = tiny_config(tiny_sample)
    with pytest.raises(OSError):
        start_analysis(store, cfg, inline=True)
    (run,) = store.list("analysis")
    status = run.status()
    assert status["state"] == "failed"
    assert status["error"].startswith(f"disk full (no space left on device): {full.failed}")
    assert "earlier artifacts are intact" in status["error"]
    # everything written before the failure is whole and marked; the partial file is gone
    assert [stages.is_done(run, s) for s in ("erm", "member_0", "member_1", "factors")] == [True] * 3 + [False]
    load_checkpoint(run.file("erm/model.pt"))
    assert run.read_json("ensemble/features_0/metadata.json")["complete"]
    assert not list(run.path.rglob(".*.tmp")) and not (run.path / "ensemble/features_1/features.npy").exists()
    assert not list((run.path / "ensemble/features_1").glob("chunks-*/p_*.npy"))  # no chunk marked done

    monkeypatch.undo()  # space freed: the same call resumes the run and finishes it
    again = start_analysis(store, cfg, inline=True)
    assert again.id == run.id and run.status()["state"] == "done"
    np.testing.assert_array_equal(dense_scores(run), dense_scores(tiny_analysis))
    assert run.read_json("metrics")["test"] == tiny_analysis.read_json("metrics")["test"]


def test_finished_feature_chunks_are_reused_after_a_full_disk(tmp_path, monkeypatch):
    """Three chunks; the disk fills while writing the second: the rerun featurizes only the
    second and third, and the store equals one written without interruption."""
    from core.attribution.gradients import make_featurizer
    from core.config import ModelConfig
    from core.train.models import build_model

    torch_model = build_model(ModelConfig(), 2, 16)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels, idx = rng.integers(0, 2, 40), np.arange(3, 40)
    featurizer = make_featurizer(torch_model, "factored", "last", 64, 0)

    def store(folder, report=None):
        return feature_store.load_or_featurize(folder, {"m": 1}, torch_model, featurizer, images, idx, labels,
                                               batch_size=16, chunk_size=16, device="cpu",
                                               **({"report": report} if report else {}))

    whole = store(tmp_path / "whole")
    calls = []
    real_featurize = feature_store.featurize
    monkeypatch.setattr(feature_store, "featurize", lambda m, f, im, ids, *a, **k: (
        calls.append(int(ids[0])), real_featurize(m, f, im, ids, *a, **k))[1])

    monkeypatch.setattr(feature_store, "open", FullDisk(lambda path: path.endswith("features.tmp"), nth=2),
                        raising=False)
    with pytest.raises(OSError, match="No space left"):
        store(tmp_path / "cut")
    assert calls == [3, 19]
    monkeypatch.setattr(feature_store, "open", open, raising=False)
    calls.clear()
    again = store(tmp_path / "cut")
    assert calls == [19, 35]  # the first chunk came from disk
    np.testing.assert_array_equal(np.load(again.path), np.load(whole.path))
    np.testing.assert_array_equal(again.gram, whole.gram)
    np.testing.assert_array_equal(again.p, whole.p)
    assert not list((tmp_path / "cut").glob("chunks-*")) and not (tmp_path / "cut" / "features.tmp").exists()
