"""What a task asks Ray for (GPUs, memory) and when members become tasks, on a described cluster
(the real multi-node cases are in test_studies_cluster.py)."""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, analysis_config, to_dict
from core.data.dataset import load_dataset
from core.studies import resources, runner
from core.studies.cluster import ClusterError, Node, runtime_env
from core.studies.resources import BASE, GIB, gpus_per_task, task_memory

MB = 1024 ** 2


@pytest.mark.parametrize("device, gpus, fraction, asked", [
    ("auto", 0, None, 0.0), ("cpu", 4, None, 0.0), ("auto", 2, None, 1.0), ("cuda", 1, None, 1.0),
    ("auto", 1, 0.25, 0.25), ("cuda", 8, 2, 2.0)])
def test_gpus_per_task(device, gpus, fraction, asked):
    assert gpus_per_task(device, gpus, fraction) == asked


def test_gpus_refused():
    with pytest.raises(ValueError, match="device 'cuda' was asked for but the Ray cluster has no GPU"):
        gpus_per_task("cuda", 0)
    with pytest.raises(ValueError, match=r"gpus per task must be in \(0, 1\], got 0"):
        gpus_per_task("auto", 1, 0)


def test_memory_grows_with_the_data():
    # 10 images of 4 x 4 px, 6 train x 2 val, 3 projected dimensions, worked out by hand:
    # images 2 * 10 * 4 * 4 * 3 = 960; scores 4 * 2 * 6 = 48 per copy; features 4 * 6 * 3 = 72
    assert task_memory("analysis", 10, 6, 2, 4, 3) - BASE == 960 + 3 * 48 + 72
    assert task_memory("member", 10, 6, 2, 4, 3) - BASE == 960 + 2 * 48 + 72
    assert task_memory("method", 10, 6, 2, 4, 3) - BASE == 960 + 2 * 48
    # CelebA: 162,770 train x 19,867 val scores are 12.9 GB dense; an analysis holds three copies
    celeba = task_memory("analysis", 202_599, 162_770, 19_867, 64, 2048)
    assert 3 * 12.9e9 < celeba < 3 * 12.9e9 + 8e9
    with pytest.raises(ValueError, match="unknown task kind"):
        task_memory("erm", 1, 1, 1, 1, 1)


def described(monkeypatch, *live: Node) -> None:
    monkeypatch.setattr(resources, "nodes", lambda: list(live))
    monkeypatch.setattr(runner, "nodes", lambda: list(live))


def node(cpus=2.0, gpus=0.0, memory=16 * GIB, name="n") -> Node:
    return Node(id=name * 8, name=name, ip="10.0.0.1", cpus=cpus, gpus=gpus, memory=memory)


@pytest.mark.parametrize("name", ["tiny_sample", "tiny_multiclass"])
def test_task_options_and_the_memory_refusal(name, request, monkeypatch):
    root = request.getfixturevalue(name)
    cfg = analysis_config(root, device="auto")
    data = load_dataset(cfg.data)
    n, n_train, n_val = len(data.split), len(data.idx("train")), len(data.idx("val"))
    described(monkeypatch, node(gpus=2))
    options = resources.task_options("analysis", cfg, data)
    assert options == {"num_gpus": 1.0, "memory": task_memory("analysis", n, n_train, n_val, 32, cfg.trak.proj_dim)}
    described(monkeypatch, node(memory=BASE + 1), node(memory=2 * GIB, name="big"))
    assert resources.task_options("method", cfg, data, 0.5) == {
        "num_gpus": 0.0, "memory": task_memory("method", n, n_train, n_val, 32, cfg.trak.proj_dim)}
    huge = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=2048))
    with pytest.raises(ClusterError, match=rf"^an analysis task on {root} needs about \d+\.\d GB \(n = {n}, "
                                           rf"{n_train} train x {n_val} val, 2048 px\) but the largest Ray node "
                                           r"offers 2\.0 GB to tasks"):
        resources.task_options("analysis", huge, data)


def test_members_become_tasks_when_slots_outnumber_analyses(monkeypatch, tiny_sample):
    t1, t3 = (analysis_config(tiny_sample, n_models=t) for t in (1, 3))
    described(monkeypatch, node(cpus=16))
    assert runner._members("auto", [t3] * 4, [0.0] * 4)  # 16 cores, 4 analyses
    assert not runner._members("auto", [t3] * 16, [0.0] * 16)
    assert not runner._members("auto", [t1], [0.0])  # one member: nothing to spread
    assert not runner._members("serial", [t3], [0.0])
    described(monkeypatch, node(cpus=2))
    assert runner._members("ray", [t3] * 5, [0.0] * 5)  # asked for: waiting analyses give their CPUs back
    described(monkeypatch, node(cpus=8, gpus=2))
    assert runner._members("auto", [t3], [1.0]) and not runner._members("auto", [t3] * 2, [1.0])
    with pytest.raises(ClusterError, match="members as tasks need more GPU slots than the 2 analyses to run"):
        runner._members("ray", [t3] * 2, [1.0])
    with pytest.raises(ValueError, match="members must be one of auto, serial, ray"):
        runner._members("always", [t3], [0.0])


def test_only_core_travels(tmp_path):
    """What Ray's own packaging puts in the job's package with our runtime environment."""
    from ray._private.runtime_env.packaging import create_package

    for name in ("core/studies", "core/__pycache__", "tests", "workdir/runs", ".venv/bin", "sample_data"):
        (tmp_path / "root" / name).mkdir(parents=True)
        (tmp_path / "root" / name / "x.py").write_text("x = 1\n")
    (tmp_path / "root" / "README.md").write_text("#")
    env = runtime_env(tmp_path / "root")
    create_package(env["working_dir"], tmp_path / "pkg.zip", include_gitignore=True, excludes=env["excludes"])
    with zipfile.ZipFile(tmp_path / "pkg.zip") as z:
        assert sorted(n for n in z.namelist() if not n.endswith("/")) == ["core/studies/x.py"]


def test_the_longest_chain_is_submitted_first():
    """On the D3M study: the default analysis carries the 4-retrain k sweep, so it and its
    cells (the sweep first) go first; T=1, the shortest analysis, goes last."""
    from core.studies.grid import tasks
    from core.studies.spec import load_study

    study = load_study(Path(PROJECT_ROOT) / "studies" / "d3m.toml")
    todo = [(i, t, json.dumps(to_dict(t.analysis_config()), sort_keys=True)) for i, t in enumerate(tasks(study))
            if t.seed == 0]
    order = [t.cell.label for _, t, _ in runner.longest_first(todo, {k: 3000 for _, _, k in todo}, False)]
    assert order == ["k by val sweep", "defaults (T=5, last layer, A<0, width 1)", "scope all layers",
                     "T=3", "proxy width 1/2", "T=1"]
