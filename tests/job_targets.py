"""Small job targets for tests/test_jobs.py, importable as 'tests.job_targets:<name>'."""
from __future__ import annotations

import os
import time

import numpy as np


def count(run, report):
    """Counts to config['n'], reporting each step, then writes its results."""
    config = run.config()
    n = config["n"]
    for i in range(1, n + 1):
        time.sleep(config.get("delay", 0.0))
        report("counting", i, n)
    run.write_json("result", {"total": sum(range(1, n + 1)), "pid": os.getpid()})
    run.write_array("squares", np.arange(1, n + 1) ** 2)


def boom(run, report):
    report("about to fail", 0, 1)
    raise ValueError("boom")


def sleepy(run, report):
    """Reports progress for up to 60 s; its `finally` shows a cancel lets cleanup run."""
    try:
        for i in range(600):
            report("sleeping", i, 600)
            time.sleep(0.1)
    finally:
        run.write_json("cleanup", {"ran": True})


not_callable = 42
