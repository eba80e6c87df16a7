"""Two real processes writing a user's choices on one analysis at once lose no update."""
from __future__ import annotations

import subprocess
import sys

from core.config import PROJECT_ROOT
from core.runs import annotations

from core.views import data as views
from core.runs.store import RunStore

ROOT = PROJECT_ROOT
WRITER = """
import sys
from core.runs import annotations
from core.runs.store import RunStore
run = RunStore(sys.argv[1]).get(sys.argv[2])
start, n = int(sys.argv[3]), int(sys.argv[4])
for i in range(start, start + n):
    annotations.update_id_set(run, "flagged", add=[i])
    annotations.toggle_cell(run, {"attribute": "place", "value": str(i), "class": "c"}, True)
    annotations.rename_pseudo_group(run, i, f"name {i}")
"""


def test_two_concurrent_writers_lose_no_update(tmp_path):
    store = RunStore(tmp_path)
    run = store.create("analysis", {})
    run.write_json("auto", {"names": [f"default {g}" for g in range(1100)]})  # names are checked against these
    n = 60
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), run.id, str(start), str(n)],
                              cwd=ROOT) for start in (0, 1000)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    expected = list(range(n)) + list(range(1000, 1000 + n))
    assert views.persisted(run, "flagged", []) == expected
    assert sorted(int(c["value"]) for c in views.persisted(run, "excluded_cells", [])) == expected
    assert views.persisted(run, "pseudo_group_names", {}) == {str(i): f"name {i}" for i in expected}
    # removing under the lock too
    assert annotations.update_id_set(run, "flagged", remove=expected[1:]) == [0]
