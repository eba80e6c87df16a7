"""Four jobs started at once on one workdir (two `d3m debias` processes, two background jobs
as the pages start them) all finish with correct, separate results."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np

from core.config import PROJECT_ROOT
from core.runs import jobs
from core.pipeline.debias import start_debias
from core.runs.store import RunStore

ROOT = PROJECT_ROOT


def test_four_concurrent_jobs_on_one_workdir(tiny_analysis, tmp_path):
    shutil.copytree(tiny_analysis.path, tmp_path / "runs" / tiny_analysis.id)
    store = RunStore(tmp_path)
    analysis = store.get(tiny_analysis.id)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    clis = [subprocess.Popen([sys.executable, "-m", "core.cli", "debias", "--analysis", analysis.id,
                              "--workdir", str(tmp_path), "--method", "d3m", "--k", str(k), "--seed", "0"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for k in (5, 9)]
    tabs = [start_debias(store, analysis.id, "random", {"k": 7, "seed": 1}),
            start_debias(store, analysis.id, "erm", {"seed": 2})]
    outs = [p.communicate(timeout=600) for p in clis]
    assert [p.returncode for p in clis] == [0, 0], [o[1][-500:] for o in outs]
    assert [jobs.wait(r, timeout=600)["state"] for r in tabs] == ["done", "done"]

    # separate runs: 2 d3m + their 2 random controls + random + erm, each finished, none shared
    runs = store.list("debias", parent=analysis.id)
    assert len(runs) == 6 and all(r.status()["state"] == "done" for r in runs)
    align, train_ids = analysis.read_array("alignment"), analysis.read_array("train_ids")
    for (stdout, _), k in zip(outs, (5, 9)):
        run = store.get(json.loads(stdout.strip().splitlines()[-1])["run_id"])
        expected = np.sort(train_ids[np.argsort(align, kind="stable")[:k]])
        np.testing.assert_array_equal(np.sort(run.read_array("removed_ids")), expected)
        control = [r for r in runs if r.config().get("control_of") == run.id]
        assert len(control) == 1 and len(control[0].read_array("removed_ids")) == k
    random_run, erm_run = tabs
    assert len(random_run.read_array("removed_ids")) == 7 and len(erm_run.read_array("removed_ids")) == 0
    assert len({r.id for r in runs}) == 6 and len({r.path for r in runs}) == 6
