"""The run store: one folder per run under `<workdir>/runs/`, everything on disk.

A run folder holds `run.json` (identity), `config.json` (what made it; written once),
`status.json` (progress of the job producing it) and its artifacts (JSON, `.npy`, any
files or subfolders). Nothing is kept in memory, so any process – a Streamlit rerun, the
CLI, a job's child process, a restarted server – sees the same state.
"""
from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from core.io import read_json, write_json_atomic, write_npy_atomic
from core.runs.process import died_message, pid_alive, reap, reap_exited, utcnow

ACTIVE_STATES = ("queued", "running")
_RUN_INFO: dict[Path, dict] = {}  # run.json of every run seen by this process (written once, never changed)
_RESERVED = {"run.json", "config.json", "status.json"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Run:
    id: str
    path: Path

    @cached_property
    def _info(self) -> dict:  # run.json never changes, so reading it once per process is enough
        info = _RUN_INFO.get(self.path)
        if info is None:
            info = _RUN_INFO[self.path] = read_json(self.path / "run.json")
        return info

    @property
    def kind(self) -> str:
        return self._info["kind"]

    @property
    def parent(self) -> str | None:
        return self._info["parent"]

    @property
    def label(self) -> str:
        return self._info["label"]

    @property
    def created_at(self) -> str:
        return self._info["created_at"]

    def config(self) -> dict:
        return read_json(self.path / "config.json")

    def status(self) -> dict:
        """The run's status, live: a queued or running run whose job process is gone is
        marked failed ("job process died", with the exit signal when it can be known) first.

        Every reader (CLI, pages, sidebar, studies, reuse/resume) goes through here, so a
        job killed by kill -9, the OOM killer or a reboot never shows as running.
        """
        status = self._read_status()
        pid = status.get("pid")
        if status.get("state") not in ACTIVE_STATES or pid is None or pid == os.getpid():
            return status  # finished, not started yet, or running inline right here
        exit_status = reap(pid)
        if exit_status is None:
            if pid_alive(pid):
                return status
            exit_status = reap_exited(pid)

        def died(current: dict) -> dict | None:
            # Re-checked under the lock: a job that just finished has written its state already.
            if current.get("state") in ACTIVE_STATES and current.get("pid") == pid:
                return {"state": "failed", "error": died_message(pid, exit_status), "finished_at": utcnow()}
            return None

        return self.update_status(died)

    def _read_status(self) -> dict:
        return read_json(self.path / "status.json")

    def update_status(self, change: Callable[[dict], dict | None]) -> dict:
        """Atomically apply `change(status) -> fields to merge (or None: leave as is)`.

        The job's child process and the processes watching it (cancel, refresh) all write
        status.json; an exclusive lock on a side file makes each read-merge-write whole, so
        e.g. a late progress report cannot undo a 'cancelled'.
        """
        with self._status_lock():
            status = self._read_status()
            fields = change(dict(status))
            if fields:
                status.update(fields, updated_at=utcnow())
                write_json_atomic(self.path / "status.json", status)
            return status

    def set_status(self, **fields: Any) -> dict:
        """Merge `fields` into status.json (and set updated_at); returns the new status."""
        return self.update_status(lambda _: fields)

    def write_json(self, name: str, obj: Any) -> None:
        path = self._artifact(name, ".json")
        if path.name in _RESERVED and path.parent == self.path:
            raise ValueError(f"{path.name} is managed by the run store, not an artifact")
        write_json_atomic(path, obj)

    def read_json(self, name: str) -> Any:
        return read_json(self._artifact(name, ".json"))

    def write_array(self, name: str, arr: Any) -> None:
        write_npy_atomic(self._artifact(name, ".npy"), arr)

    def read_array(self, name: str, mmap: bool = True) -> np.ndarray:
        """Load `name.npy`; memory-mapped read-only by default, since arrays can be large."""
        return np.load(self._artifact(name, ".npy"), mmap_mode="r" if mmap else None)

    def has(self, name: str) -> bool:
        """Whether an artifact `name`, `name.json` or `name.npy` exists (file or folder)."""
        path = self.file(name, create_parent=False)
        return any(p.exists() for p in (path, path.with_name(path.name + ".json"),
                                         path.with_name(path.name + ".npy")))

    def file(self, name: str, create_parent: bool = True) -> Path:
        """Path of an artifact inside the run folder (e.g. 'checkpoints/model_0.pt')."""
        rel = Path(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"artifact name must be a relative path inside the run: {name!r}")
        path = self.path / rel
        if create_parent:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _artifact(self, name: str, suffix: str) -> Path:
        # No mkdir here: reads must not create folders, and the atomic writers make their own.
        return self.file(name if name.endswith(suffix) else name + suffix, create_parent=False)

    @contextmanager
    def _status_lock(self) -> Iterator[None]:
        with open(self.path / ".status.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield  # closing the file releases the lock


class RunStore:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.runs_dir = self.workdir / "runs"

    def create(self, kind: str, config: dict, parent: str | None = None, label: str = "") -> Run:
        """A new run, status queued. run.json is written last: a folder without it is not a run."""
        if not _NAME.match(kind):
            raise ValueError(f"run kind must be letters, digits, '_', '.' or '-': {kind!r}")
        if parent is not None:
            self.get(parent)  # KeyError if the parent does not exist
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        while True:
            created = datetime.now(timezone.utc)
            run_id = f"{kind}-{created:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
            try:
                (self.runs_dir / run_id).mkdir()  # exclusive: a clashing id just draws again
                break
            except FileExistsError:
                continue
        run = Run(run_id, self.runs_dir / run_id)
        now = created.isoformat(timespec="microseconds")
        write_json_atomic(run.path / "config.json", config)
        write_json_atomic(run.path / "status.json", {
            "state": "queued", "stage": "", "done": 0, "total": 0, "fraction": 0.0,
            "started_at": None, "updated_at": now, "finished_at": None,
            "pid": None, "target": None, "error": None, "traceback": None,
        })
        write_json_atomic(run.path / "run.json", {
            "id": run_id, "kind": kind, "parent": parent, "label": label, "created_at": now,
        })
        return run

    def get(self, run_id: str) -> Run:
        path = self.runs_dir / run_id
        if not _NAME.match(run_id) or not (path / "run.json").is_file():
            raise KeyError(f"no run {run_id!r} in {self.workdir}")
        return Run(run_id, path)

    def list(self, kind: str | None = None, parent: str | None = None) -> list[Run]:
        """Runs oldest first, optionally only of one kind and/or one parent."""
        if not self.runs_dir.is_dir():
            return []
        runs = [Run(p.name, p) for p in self.runs_dir.iterdir()
                if _NAME.match(p.name) and (p in _RUN_INFO or (p / "run.json").is_file())]
        runs = [r for r in runs if (kind is None or r.kind == kind)
                and (parent is None or r.parent == parent)]
        return sorted(runs, key=lambda r: (r.created_at, r.id))

    def version(self) -> tuple:
        """Changes whenever a run is created or deleted or its status changes (status.json is
        replaced on every change): a key for caching what is read from the runs (the pages'
        run tables). A job that died unseen changes it once Run.status() has marked it failed."""
        if not self.runs_dir.is_dir():
            return ()
        out = []
        for p in self.runs_dir.iterdir():
            try:
                out.append((p.name, (p / "status.json").stat().st_mtime_ns))
            except OSError:
                out.append((p.name, 0))
        return tuple(sorted(out))

    def find_done(self, kind: str, config: dict, parent: str | None = None) -> Run | None:
        """The newest finished run of this kind made with exactly this config (for reuse)."""
        for run in reversed(self.list(kind, parent=parent)):
            if run.config() == config and run.status().get("state") == "done":
                return run
        return None

    def find_active(self, kind: str, config: dict, parent: str | None = None) -> Run | None:
        """The newest queued or running run of this kind with exactly this config whose job is alive."""
        for run in reversed(self.list(kind, parent=parent)):
            if run.config() == config and run.status().get("state") in ACTIVE_STATES:
                return run
        return None

    def find_resumable(self, kind: str, config: dict, parent: str | None = None) -> Run | None:
        """The newest failed or cancelled (or died) run of this kind with exactly this config."""
        for run in reversed(self.list(kind, parent=parent)):
            if run.config() == config and run.status().get("state") in ("failed", "cancelled") \
                    and run.status().get("target"):
                return run
        return None

    def delete(self, run_id: str) -> None:
        """Remove a run folder; refuses while its job may still be writing into it."""
        run = self.get(run_id)
        status = run.status()
        if status["state"] in ACTIVE_STATES and pid_alive(status.get("pid")):
            raise ValueError(f"run {run_id!r} is {status['state']} (pid {status['pid']}); cancel it first")
        # Rename first so a half-removed folder is never listed as a run.
        trash = self.runs_dir / f".deleting-{run_id}-{secrets.token_hex(3)}"
        run.path.rename(trash)
        shutil.rmtree(trash)
