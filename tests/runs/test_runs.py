import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.runs.process import pid_alive
from core.runs.store import RunStore


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "work")


def test_create_get_list_delete(store):
    a = store.create("train", {"lr": 0.1}, label="base")
    b = store.create("trak", {"k": 5}, parent=a.id)
    assert a.id.startswith("train-") and b.id.startswith("trak-")
    assert (a.kind, a.parent, a.label) == ("train", None, "base")
    assert (b.kind, b.parent, b.label) == ("trak", a.id, "")
    assert a.created_at <= b.created_at
    assert a.status()["state"] == "queued" and a.status()["pid"] is None
    assert store.get(a.id) == a
    assert [r.id for r in store.list()] == [a.id, b.id]
    assert store.list(kind="trak") == [b]
    assert store.list(parent=a.id) == [b]
    store.delete(b.id)
    assert store.list() == [a]
    assert not any(store.runs_dir.glob(f"*{b.id}*"))
    with pytest.raises(KeyError):
        store.get(b.id)


def test_unknown_parent_and_bad_kind_rejected(store):
    with pytest.raises(KeyError):
        store.create("trak", {}, parent="train-nope")
    with pytest.raises(ValueError):
        store.create("../evil", {})


def test_ids_unique_across_many_quick_creations(store):
    ids = []

    def make():
        ids.extend(store.create("train", {}).id for _ in range(25))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == len(set(ids)) == 200
    assert len(store.list()) == 200


def test_config_written_once(store):
    config = {"lr": 0.1, "nested": {"epochs": 3}}
    run = store.create("train", config)
    config["lr"] = 99  # the caller's dict is not the stored config
    run.set_status(state="running", stage="x")
    assert run.config() == {"lr": 0.1, "nested": {"epochs": 3}}
    for reserved in ("config", "status.json", "run"):
        with pytest.raises(ValueError):
            run.write_json(reserved, {})
    assert run.config()["lr"] == 0.1


def test_status_merge(store):
    run = store.create("train", {})
    before = run.status()
    after = run.set_status(state="running", stage="epoch", done=1, total=4)
    assert after == run.status()
    assert after["state"] == "running" and after["pid"] is None  # other fields kept
    assert after["updated_at"] >= before["updated_at"]
    assert run.update_status(lambda s: None) == after  # no change: nothing written


def test_json_and_array_round_trip(store):
    run = store.create("trak", {})
    run.write_json("scores", {"a": [1, 2], "b": np.float32(0.5)})
    assert run.read_json("scores.json") == {"a": [1, 2], "b": 0.5}
    arr = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    run.write_array("features", arr)
    loaded = run.read_array("features")
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    np.testing.assert_array_equal(loaded, arr)
    assert not isinstance(run.read_array("features.npy", mmap=False), np.memmap)
    assert run.has("scores") and run.has("features") and not run.has("missing")
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in run.path.iterdir() if p.name.endswith(".tmp")) == []


def test_file_paths(store):
    run = store.create("train", {})
    ckpt = run.file("checkpoints/model_0.pt")
    assert ckpt.parent.is_dir() and ckpt.parent.parent == run.path
    ckpt.write_bytes(b"x")
    assert run.has("checkpoints") and run.has("checkpoints/model_0.pt")
    for bad in ("../other", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            run.file(bad)


def test_get_unknown_names_it(store):
    store.create("train", {})
    with pytest.raises(KeyError, match="train-19990101-000000-abcdef"):
        store.get("train-19990101-000000-abcdef")
    with pytest.raises(KeyError):
        store.get("../work")


def test_list_skips_half_created_folder(store):
    run = store.create("train", {})
    half = store.runs_dir / "train-20240101-000000-abcdef"
    half.mkdir()
    (half / "config.json").write_text("{}")
    (store.runs_dir / "stray.txt").write_text("not a run")
    assert store.list() == [run]
    with pytest.raises(KeyError):
        store.get(half.name)


def test_empty_workdir(tmp_path):
    store = RunStore(tmp_path / "nothing-yet")
    assert store.list() == []
    assert store.find_done("analysis", {}) is None


def test_restart_sees_everything(store):
    a = store.create("train", {"lr": 0.1}, label="base")
    a.write_array("margins", np.arange(5))
    a.set_status(state="done", fraction=1.0)
    b = store.create("d3m", {"k": 2}, parent=a.id)
    again = RunStore(store.workdir)
    assert [r.id for r in again.list()] == [a.id, b.id]
    a2 = again.get(a.id)
    assert (a2.label, a2.config(), a2.status()["state"]) == ("base", {"lr": 0.1}, "done")
    np.testing.assert_array_equal(a2.read_array("margins"), np.arange(5))
    assert again.get(b.id).parent == a.id
    assert again.find_done("train", {"lr": 0.1}) == a2
    assert again.find_done("d3m", {"k": 2}) is None  # queued, not done


def test_delete_refuses_live_job(store):
    run = store.create("train", {})
    run.set_status(state="running", pid=os.getpid())
    with pytest.raises(ValueError, match="cancel it first"):
        store.delete(run.id)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not pid_alive(dead.pid)
    run.set_status(pid=dead.pid)  # its process is gone: the run can go
    store.delete(run.id)
    assert store.list() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pid_alive_sees_zombie_as_dead():
    proc = subprocess.Popen(["true"])
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + 5
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not yet reaped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not pid_alive(proc.pid)
    proc.wait()
    assert pid_alive(os.getpid())
    assert not pid_alive(None)


def test_artifacts_in_subfolders(store):
    run = store.create("train", {})
    run.write_json("epochs/e1", {"loss": 0.5})
    run.write_array("epochs/margins", np.zeros(3))
    assert run.read_json("epochs/e1") == {"loss": 0.5} and run.has("epochs/margins")
    with pytest.raises(FileNotFoundError):
        run.read_json("nowhere/x")
    assert not (run.path / "nowhere").exists()
