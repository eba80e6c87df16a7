"""A write failing with ENOSPC mid-featurization: the run is failed with a clear message,
earlier artifacts are intact (and reused when the run resumes after space is freed)."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from core import stages
from core.analysis import start_analysis
from core.attribution import store as feature_store
from core.checkpoints import load_checkpoint
from core.runs import RunStore
from tests.conftest import tiny_config


class FullDisk:
    """open() for the feature store whose files fail with ENOSPC once member 1's are written."""

    def __init__(self):
        self.failed = None

    def __call__(self, path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        if "w" not in mode or "features_1" not in str(path):
            return fh
        outer = self

        class Handle:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, data):
                if len(data) > 1024:  # a block of features, not the .npy header
                    outer.failed = str(path)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                return fh.write(data)

        return Handle()


def test_disk_full_while_featurizing(tiny_sample, tiny_analysis, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "work")
    full = FullDisk()
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
    assert [stages.is_done(run, s) for s in ("erm", "member_0", "member_1", "scores")] == [True] * 3 + [False]
    load_checkpoint(run.file("erm/model.pt"))
    assert run.read_json("ensemble/features_0/metadata.json")["complete"]
    assert not list(run.path.rglob("*.tmp")) and not (run.path / "ensemble/features_1/features.npy").exists()

    monkeypatch.undo()  # space freed: the same call resumes the run and finishes it
    again = start_analysis(store, cfg, inline=True)
    assert again.id == run.id and run.status()["state"] == "done"
    np.testing.assert_array_equal(run.read_array("scores"), tiny_analysis.read_array("scores"))
    assert run.read_json("metrics")["test"] == tiny_analysis.read_json("metrics")["test"]
