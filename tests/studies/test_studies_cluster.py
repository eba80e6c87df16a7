"""Studies on a real multi-node Ray cluster on this machine (one cluster for the module): a head
that runs no task (0 CPUs) and two worker nodes started from an interpreter that has the
packages but NOT the project (`import core` fails there), so every task proves that the code
travels with the job:
- "plain" (2 CPUs);
- "second" (1 CPU and `--num-gpus 1` on a machine with no CUDA), in its own mount namespace
  where one dataset path shows another copy (when `unshare -m` is allowed).
Drivers are `d3m ablate --ray` processes, as a user runs them, with no token (HOME without
~/.ray/auth_token)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import PROJECT_ROOT, analysis_config
from core.pipeline.analysis import start_analysis
from core.pipeline.debias import start_debias
from core.runs.store import RunStore
from tests.studies.ray_nodes import bare_python, clean_env, free_port, head, worker

pytestmark = pytest.mark.slow
STUDY = """\
seeds = [0]
methods = ["d3m"]

[analysis]
data = "{data}"
epochs = 1
n_models = {n_models}
proj_dim = 128
device = "{device}"
"""


def can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_sample):
    tmp = tmp_path_factory.mktemp("cluster")
    (tmp / "home").mkdir()
    env = clean_env(tmp / "home")
    python = bare_python(tmp / "bare")
    copy, other = tmp / "data" / "copy", tmp / "other"
    shutil.copytree(tiny_sample, copy)
    shutil.copytree(tiny_sample, other)
    first = other / first_image(other)
    Image.open(first).convert("RGB").resize((9, 9)).save(first)  # another copy: one image differs
    port = free_port()
    separate = can_unshare()  # a private mount namespace: `copy` shows `other` to "second" alone
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount --bind "{other}" "{copy}" && exec "$0" "$@"'] if separate else None
    starts = [lambda: head(port, env, tmp / "head.log", "--num-cpus=0"),
              lambda: worker(port, env, tmp / "plain.log", "--num-cpus=2", "--node-name=plain", python=python),
              lambda: worker(port, env, tmp / "second.log", "--num-cpus=1", "--num-gpus=1", "--node-name=second",
                             python=python, wrap=wrap)]
    nodes = []
    try:
        for start in starts:  # one at a time: several at once overload a 2-core machine
            nodes.append(started(start))
        yield {"address": f"127.0.0.1:{port}", "env": env, "python": python, "tmp": tmp, "copy": copy,
               "separate": separate}
    finally:
        for node in reversed(nodes):
            node.stop()


def started(start):
    """A node that reported started, tried twice (Ray gives up after 30 s on a loaded machine)."""
    node = start()
    try:
        node.ready()
    except RuntimeError:
        node.stop()
        node = start()
        node.ready()
    return node


def first_image(root: Path) -> str:
    return (root / "metadata.csv").read_text().splitlines()[1].split(",")[0]


def ablate(cluster, tmp: Path, data: Path, *args: str, device: str = "cpu", n_models: int = 1,
           wait: bool = True):
    study = tmp / "study.toml"
    study.write_text(STUDY.format(data=data, device=device, n_models=n_models) + '[grid]\n"d3m.beta" = [1.0]\n')
    cmd = [sys.executable, "-m", "core.cli", "ablate", str(study), "--workdir", str(tmp / "w"),
           "--ray", cluster["address"], *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=cluster["env"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=cluster["env"], capture_output=True, text=True, timeout=400)


def test_code_travels_to_nodes_without_the_project(cluster, tiny_sample, tmp_path):
    bare = subprocess.run([str(cluster["python"]), "-c", "import core"], cwd=cluster["tmp"], env=cluster["env"],
                          capture_output=True, text=True)
    assert "No module named 'core'" in bare.stderr  # the nodes' interpreter cannot import the project
    out = ablate(cluster, tmp_path, tiny_sample, "--members", "serial")
    assert out.returncode == 0, out.stderr[-3000:]
    store = RunStore(tmp_path / "w")
    (study_run,) = store.list("study")
    assert [c["state"] for c in study_run.read_json("cells")] == ["done"]
    ran = [r.read_json("resources") for r in store.list("analysis") + store.list("debias") if r.has("resources.json")]
    assert len(ran) == 2 and {r["node_name"] for r in ran} <= {"plain", "second"}  # never the head
    assert {r["device"] for r in ran} == {"cpu"}  # device cpu: no GPU asked for, none used


def test_a_task_given_a_fake_gpu_fails_in_one_line(cluster, tiny_sample, tmp_path):
    assert not torch.cuda.is_available()
    out = ablate(cluster, tmp_path, tiny_sample, device="auto")
    assert out.returncode == 1
    (study_run,) = RunStore(tmp_path / "w").list("study")
    (cell,) = study_run.read_json("cells")
    assert cell["state"] == "failed"
    assert cell["error"].startswith("RuntimeError: this task asked for 1 GPU and Ray placed it on node ")
    assert "none is visible to torch there" in cell["error"] and "\n" not in cell["error"]
    assert cell["error"] in out.stderr
    assert RunStore(tmp_path / "w").list("analysis") == []  # nothing trained on the CPU instead


def test_a_node_with_another_copy_of_the_data_stops_the_study_first(cluster, tmp_path):
    if not cluster["separate"]:
        pytest.skip("needs `unshare -m` (root) for a node with its own view of a path")
    out = ablate(cluster, tmp_path, cluster["copy"])
    assert out.returncode == 1
    name = first_image(cluster["copy"])
    size = (cluster["copy"] / name).stat().st_size
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: node second (") and ", node id " in line
    assert f"sees a different dataset at {cluster['copy']}: image {name} is " in line
    assert line.endswith(f"bytes there, {size} here; every node needs the same copy at the same path")
    store = RunStore(tmp_path / "w")
    assert store.list("analysis") == [] and store.list("debias") == []  # refused before any task
    (study_run,) = store.list("study")
    assert study_run.status()["state"] == "failed"


def test_a_killed_worker_resumes_from_its_last_stage(cluster, tiny_sample, tmp_path):
    node_dir = tmp_path / "nodes"
    proc = ablate(cluster, tmp_path, tiny_sample, "--members", "serial", "--node-dir", str(node_dir),
                  n_models=3, wait=False)
    try:
        marker = wait_for(lambda: next(node_dir.glob("tasks/*/runs/analysis-*/stages/member_0.json"), None), proc)
        run_dir = marker.parents[1]
        before = {name: (run_dir / "stages" / name).read_bytes() for name in ("erm.json", "member_0.json")}
        status = json.loads((run_dir / "status.json").read_text())
        assert not (run_dir / "stages" / "scores.json").exists()
        os.kill(status["pid"], signal.SIGKILL)  # the worker running the analysis dies mid-ensemble
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    store = RunStore(tmp_path / "w")
    (analysis,) = store.list("analysis")
    assert analysis.id == run_dir.name and analysis.status()["resumed"] == 1
    for name, data in before.items():  # ERM and member 0 were not trained again
        assert (analysis.path / "stages" / name).read_bytes() == data
    assert not any(node_dir.glob("tasks/*"))  # task folders go once their results are home
    (cell,) = store.list("study")[0].read_json("cells")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray task
    try:
        ref = RunStore(tmp_path / "ref")
        cfg = analysis_config(tiny_sample, epochs=1, n_models=3, proj_dim=128, device="cpu", seed=0)
        undisturbed = start_debias(ref, start_analysis(ref, cfg, inline=True).id, "d3m", {"beta": 1.0, "seed": 0},
                                   control=False, inline=True)
    finally:
        torch.set_num_threads(threads)
    mine = store.get(cell["run"])
    np.testing.assert_array_equal(mine.read_array("removed_ids"), undisturbed.read_array("removed_ids"))
    assert mine.read_json("metrics")["test"] == undisturbed.read_json("metrics")["test"]


def wait_for(find, proc, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        if proc.poll() is not None:
            raise AssertionError(f"the study ended first:\n{proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return found
