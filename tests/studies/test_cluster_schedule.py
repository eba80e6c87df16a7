"""The on-paper cluster schedule (benchmarks/cluster_schedule.py) against schedules worked out by hand."""
from __future__ import annotations

from benchmarks.cluster_schedule import critical_path, schedule, tasks_of

FIGURES = [  # analysis A (10 s) with cells a (5 s) and b (20 s); analysis B (3 s) with cell c (1 s)
    {"cell": "a", "analysis": "A", "analysis_cpu_s": 10, "method_cpu_s": 5},
    {"cell": "b", "analysis": "A", "analysis_cpu_s": 10, "method_cpu_s": 20},
    {"cell": "c", "analysis": "B", "analysis_cpu_s": 3, "method_cpu_s": 1},
]


def test_schedule_by_hand():
    tasks = tasks_of(FIGURES, 1.0, seeds=1)
    assert [(t["seconds"], t["after"]) for t in tasks] == [(10, None), (20, 0), (5, 0), (3, None), (1, 3)]
    assert schedule(tasks, 1) == 39  # everything in a row
    # 2 workers: A 0-10 | B 0-3, c 3-4, idle until A is done; then b 10-30 | a 10-15
    assert schedule(tasks, 2) == 30
    assert schedule(tasks, 8) == 30 == critical_path(tasks)  # A then b: no worker count beats it
    two_seeds = tasks_of(FIGURES, 2.0, seeds=2)
    assert len(two_seeds) == 10 and sum(t["seconds"] for t in two_seeds) == 4 * 39
    assert critical_path(two_seeds) == 60
