"""Images at 224 px stream from the on-disk cache: the analysis of a generated dataset completes
under a memory limit below what one array of all its images would need (issues 24 and 20).

The limit is RLIMIT_DATA on a child process: it counts the process's own (private, writable)
memory and not the memory-mapped image cache, whose pages the kernel can always drop. The
child checks that the limit bites: allocating one array of all the images fails there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from sample_data.make_sample import generate

SIZE = 224
CHILD = r"""
import io, json, resource, sys
from dataclasses import replace
import numpy as np, pandas as pd, torch
from core.config import analysis_config
from core.pipeline.analysis import TARGET, create_analysis_run
from core.runs import jobs
from core.runs.store import RunStore

root, workdir, size, fraction = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
pd.read_csv(io.StringIO("a\n1\n"))  # allocators that reserve address space once do it before the limit

def data_bytes():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmData:"))

n = len(pd.read_csv(f"{root}/metadata.csv"))
images_bytes = n * size * size * 3
limit = data_bytes() + int(fraction * images_bytes)
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
cfg = analysis_config(root, image_size=size, width=4, steps=4, batch_size=8, device="cpu", n_models=1,
                      proj_dim=32, chunk_size=256)
cfg = replace(cfg, trak=replace(cfg.trak, batch_size=8))
run = create_analysis_run(RunStore(workdir), cfg)
try:
    jobs.run_inline(run, TARGET)
except Exception as exc:
    print(json.dumps({"state": "failed", "error": repr(exc)[:300]}))
    raise SystemExit(0)
try:
    np.ones(images_bytes, np.uint8)
    bites = False
except MemoryError:
    bites = True
scores = np.load(run.path / "scores.npy", mmap_mode="r")
print(json.dumps({"state": run.status()["state"], "images_bytes": images_bytes, "limit_bites": bites,
                  "scores_shape": list(scores.shape), "n": n}))
"""


@pytest.mark.slow
def test_the_analysis_at_224_px_completes_under_a_limit_below_the_image_array(tmp_path: Path):
    root = tmp_path / "data"
    generate(root, seed=0, scale=0.6)  # 2,520 images: 380 MB as one uint8 array at 224 px
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1",
           # glibc returns freed memory at once, so the limit measures what is in use
           "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(tmp_path / "workdir"), str(SIZE), "0.75"],
                         env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["state"] == "done", result
    assert result["limit_bites"]  # one array of all the images would not have fit
    assert result["scores_shape"] == [240, 1800]  # every validation x training example was scored
