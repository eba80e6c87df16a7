"""Studies on a real local Ray (2 CPUs, one session for the module): a 4-task study equals the
same cells run one by one; a failing cell is recorded while the others finish; unchanged cells
are reused; a study whose driver is killed resumes without rerunning finished cells; members
as tasks of their own give the serial scores; and a study joins a cluster started by
`ray start --head` on a free port, with no token and with token authentication (the README's
flow), whatever Ray state this machine has."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.runs import jobs
from core.pipeline.analysis import start_analysis
from core.config import PROJECT_ROOT, analysis_config
from core.pipeline.debias import start_debias
from core.runs.store import RunStore
from core.studies import runner, table
from core.studies.spec import load_study
from core.studies.study_runs import start_study
from tests.studies.ray_nodes import clean_env, free_port, head

pytestmark = pytest.mark.slow
ROOT = PROJECT_ROOT
SETTINGS = {"epochs": 1, "n_models": 1, "proj_dim": 128, "device": "cpu"}
HEAD = """\
seeds = {seeds}
methods = ["d3m"]

[analysis]
data = "{data}"
epochs = 1
n_models = 1
proj_dim = 128
device = "cpu"
"""


def study_file(tmp_path: Path, data: Path, body: str, seeds=(0,), name: str = "study") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(HEAD.format(seeds=list(seeds), data=data) + body)
    return path


@pytest.fixture(scope="module")
def local_ray():
    os.environ.pop("D3M_RAY_ADDRESS", None)
    started = runner.connect(num_cpus=2)
    yield runner.address()
    if started:
        runner.shutdown()


@pytest.fixture(scope="module")
def beta_study(local_ray, tiny_sample, tmp_path_factory):
    """2 cells (beta 1, 2) x 2 seeds, run once for the module."""
    tmp = tmp_path_factory.mktemp("beta")
    study = load_study(study_file(tmp, tiny_sample, '[grid]\n"d3m.beta" = [1.0, 2.0]\n', seeds=(0, 1)))
    store = RunStore(tmp / "work")
    run = start_study(store, study, inline=True)
    return store, run


def one_by_one(store: RunStore, data: Path, seed: int, beta: float):
    """The same cell run in this process with the CLI's functions, no Ray."""
    analysis = start_analysis(store, analysis_config(data, **SETTINGS, seed=seed), inline=True)
    return start_debias(store, analysis.id, "d3m", {"beta": beta, "seed": seed}, control=False, inline=True)


def test_study_equals_cells_run_one_by_one(beta_study, tiny_sample, tmp_path):
    store, run = beta_study
    assert run.status()["state"] == "done"
    records = run.read_json("cells")
    assert [(r["cell"], r["seed"], r["state"], r["reused"]) for r in records] == [
        ("beta=1.0", 0, "done", False), ("beta=1.0", 1, "done", False),
        ("beta=2.0", 0, "done", False), ("beta=2.0", 1, "done", False)]
    # one analysis per seed, shared by both cells, written by the driver into the store
    assert len(store.list("analysis")) == 2 and len(store.list("debias")) == 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray task
    try:
        ref = RunStore(tmp_path / "ref")
        expected = {(b, s): one_by_one(ref, tiny_sample, s, b) for b in (1.0, 2.0) for s in (0, 1)}
    finally:
        torch.set_num_threads(threads)
    by_task = {(float(r["cell"].split("=")[1]), r["seed"]): store.get(r["run"]) for r in records}
    for key, mine in expected.items():
        np.testing.assert_array_equal(by_task[key].read_array("removed_ids"), mine.read_array("removed_ids"))
    got = table.read(run).set_index("cell")
    for beta in (1.0, 2.0):
        ms = [mine.read_json("metrics") for (b, _), mine in expected.items() if b == beta]
        for name, values in (("test_wga", [m["test"]["wga"] for m in ms]),
                             ("test_macro_f1", [m["test"]["macro_f1"] for m in ms]),
                             ("test_balanced_acc", [m["test"]["balanced_acc"] for m in ms]),
                             ("n_removed", [m["n_removed"] for m in ms])):
            assert got.loc[f"beta={beta}", f"{name}_mean"] == pytest.approx(np.mean(values))
            assert got.loc[f"beta={beta}", f"{name}_std"] == pytest.approx(np.std(values, ddof=1))
        assert got.loc[f"beta={beta}", "seeds"] == 2
    # the worker's own measurements: a whole training process, and the analysis it used
    assert (got["wall_s_mean"] > 0).all() and (got["cpu_s_mean"] > 0).all()
    assert (got["peak_mb_mean"] > 50).all() and (got["analysis_wall_s_mean"] > 0).all()
    assert (tmp_path / "x").parent.exists() and run.has("table.json")


def test_failing_cell_recorded_and_unchanged_cell_reused(beta_study, tiny_sample, tmp_path):
    store, first = beta_study
    body = ('[[variants]]\nlabel = "same as before"\n"d3m.beta" = 1.0\n\n'
            '[[variants]]\nlabel = "too many"\n"d3m.k" = 100000\n')
    study = load_study(study_file(tmp_path, tiny_sample, body))
    n_before = len(store.list("debias"))
    run = start_study(store, study, inline=True)
    same, bad = run.read_json("cells")
    before = next(r for r in first.read_json("cells") if r["cell"] == "beta=1.0" and r["seed"] == 0)
    assert same["state"] == "done" and same["reused"] and same["run"] == before["run"]
    assert bad["state"] == "failed" and bad["error"] == (
        "ValueError: k 100000 is outside 0..299: the training split has 300 examples and at least one must stay")
    assert 'core/pipeline/preflight.py", line' in bad["traceback"]  # refused before any task ran
    got = table.read(run).set_index("cell")
    assert got.loc["too many", "failed"] == 1 and got.loc["too many", "seeds"] == 0
    assert got.loc["same as before", "test_wga_mean"] == pytest.approx(
        store.get(before["run"]).read_json("metrics")["test"]["wga"])
    assert len(store.list("debias")) == n_before  # a failed task returns no run: it is in cells.json only


def test_resume_after_the_driver_is_killed(local_ray, tiny_sample, tmp_path):
    body = ('[[variants]]\nlabel = "quick"\n\n[[variants]]\nlabel = "sweep"\n"d3m.k_sweep" = [20, 40, 60, 80, 100, 120]\n'
            '\n[[variants]]\nlabel = "beta 2"\n"d3m.beta" = 2.0\n')
    study = load_study(study_file(tmp_path, tiny_sample, body))
    store = RunStore(tmp_path / "work")
    first = start_study(store, study, ray_address=local_ray)  # a background job joining our Ray
    deadline = time.monotonic() + 240
    while not any(c["state"] == "done" for c in (first.read_json("cells") if first.has("cells.json") else [])):
        assert time.monotonic() < deadline and jobs.refresh(first)["state"] in ("queued", "running")
        time.sleep(0.2)
    os.killpg(first.status()["pid"], signal.SIGKILL)  # the driver dies without a word
    assert jobs.wait(first, timeout=30)["state"] == "failed"
    done_before = {c["cell"]: c["run"] for c in first.read_json("cells") if c["state"] == "done"}
    runs_before = {r.id for r in store.list("debias")}

    second = start_study(store, study, inline=True)
    cells = second.read_json("cells")
    assert all(c["state"] == "done" for c in cells), [(c["cell"], c["state"], c["error"]) for c in cells]
    for cell in cells:
        if cell["cell"] in done_before:
            assert cell["reused"] and cell["run"] == done_before[cell["cell"]]
        else:
            assert not cell["reused"] and cell["run"] not in runs_before
    assert len(store.list("analysis")) == 1  # the analysis imported before the kill is reused
    assert len({c["run"] for c in cells}) == 3


@pytest.mark.parametrize("token", [False, True], ids=["no token", "token"])
def test_joins_a_cluster_by_address(tiny_sample, tmp_path, token):
    """`ray start --head` then `d3m ablate --ray HEAD:PORT` from a new shell, whatever Ray state
    this machine and this pytest process have (HOME and RAY_* set here). With a token in
    ~/.ray, Ray 2.60 turns token authentication on for the head: a driver without
    RAY_AUTH_MODE=token is refused in one line saying what is missing, and the README's secure
    flow (the same token, RAY_AUTH_MODE=token) joins."""
    (tmp_path / "home").mkdir()
    env = clean_env(tmp_path / "home")
    if token:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env,
                       check=True, capture_output=True)
        assert (tmp_path / "home" / ".ray" / "auth_token").is_file()
    port = free_port()
    node = head(port, env, tmp_path / "head.log", "--num-cpus=2")
    try:
        node.ready()
        path = study_file(tmp_path, tiny_sample, '[grid]\n"d3m.beta" = [1.0]\n')
        cmd = [sys.executable, "-m", "core.cli", "ablate", str(path), "--workdir", str(tmp_path / "w"),
               "--ray", f"127.0.0.1:{port}"]
        if token:
            refused = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert refused.returncode == 1
            line = refused.stderr.strip().splitlines()[-1]
            assert line.startswith(f"error: could not join the Ray cluster at 127.0.0.1:{port} (")
            assert line.endswith("the cluster most likely requires token authentication and RAY_AUTH_MODE is unset "
                                 "here; export RAY_AUTH_MODE=token and give this driver the cluster's token (this "
                                 f"machine has one in {tmp_path / 'home' / '.ray' / 'auth_token'})")
            env = {**env, "RAY_AUTH_MODE": "token"}  # the documented flow
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "beta=1.0" in out.stdout and "table.csv" in out.stdout
        study_run = RunStore(tmp_path / "w").list("study")[-1]
        assert study_run.config()["ray_address"] == f"127.0.0.1:{port}"
        assert [c["state"] for c in study_run.read_json("cells")] == ["done"]
    finally:
        node.stop()


def test_join_failure_names_what_is_missing(monkeypatch, tmp_path):
    """The diagnosis alone, for the cases a test cluster cannot cheaply show."""
    from core.studies.cluster import join_failure

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    error = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1")
    port = free_port()  # nothing listens there
    assert join_failure(f"127.0.0.1:{port}", error) == (
        f"could not join the Ray cluster at 127.0.0.1:{port} (Failed to connect to Ray cluster at 127.0.0.1:1): "
        f"nothing answers there; start its head with `ray start --head --port {port}` or fix the address")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        assert "RAY_AUTH_MODE is unset here; export RAY_AUTH_MODE=token and give this driver the cluster's token " \
               "(this machine has none: copy the head's token (`ray get-auth-token` on the head) to " \
               "~/.ray/auth_token here or set RAY_AUTH_TOKEN)" in join_failure(address, error)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        assert join_failure(address, error).endswith(": RAY_AUTH_MODE=token but this machine has no token; copy "
                                                     "the head's token (`ray get-auth-token` on the head) to "
                                                     "~/.ray/auth_token here or set RAY_AUTH_TOKEN")
        monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
        assert ": the cluster refused the token in RAY_AUTH_TOKEN; copy the head's token" in join_failure(address, error)


def test_ensemble_members_on_ray_equal_the_serial_loop(local_ray, tiny_sample, tmp_path):
    from core.train.checkpoints import load_checkpoint
    from core.studies import members

    from threadpoolctl import threadpool_limits

    cfg = analysis_config(tiny_sample, **{**SETTINGS, "n_models": 2})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray task (torch and BLAS: one thread)
    try:
        with threadpool_limits(1):
            serial = start_analysis(RunStore(tmp_path / "serial"), cfg, inline=True)
        on_ray = start_analysis(RunStore(tmp_path / "ray"), cfg, inline=True, target=members.TARGET)
    finally:
        torch.set_num_threads(threads)
    assert on_ray.status()["target"] == members.TARGET
    for name in ("ensemble/factors/q_0.npy", "ensemble/factors/q_1.npy", "ensemble/factors/gram_b.npy",
                 "ensemble/features_1/features.npy", "ensemble/features_1/p.npy"):
        np.testing.assert_array_equal(np.load(on_ray.file(name)), np.load(serial.file(name)))
    np.testing.assert_array_equal(on_ray.read_array("alignment"), serial.read_array("alignment"))
    for t in range(2):
        np.testing.assert_array_equal(on_ray.read_array(f"ensemble/subset_{t}"), serial.read_array(f"ensemble/subset_{t}"))
        a, b = (load_checkpoint(r.file(f"ensemble/model_{t}.pt")).state_dict() for r in (on_ray, serial))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert on_ray.read_json("metrics")["timings"]["featurize"] > 0


def test_study_with_members_as_tasks(local_ray, tiny_sample, tmp_path):
    """`members = "ray"`: the analysis task waits for its members, themselves Ray tasks (it gives
    its CPU back meanwhile); the scores are the serial loop's."""
    from threadpoolctl import threadpool_limits

    study = load_study(study_file(tmp_path, tiny_sample, '[[variants]]\nlabel = "T=2"\n"analysis.n_models" = 2\n'))
    store = RunStore(tmp_path / "work")
    run = start_study(store, study, inline=True, members="ray")
    assert [c["state"] for c in run.read_json("cells")] == ["done"]
    (analysis,) = store.list("analysis")
    assert analysis.status()["target"] == "analysis_on_ray"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            cfg = analysis_config(tiny_sample, **{**SETTINGS, "n_models": 2})
            serial = start_analysis(RunStore(tmp_path / "serial"), cfg, inline=True)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(analysis.read_array("scores"), serial.read_array("scores"))
