"""Real Ray nodes for the tests, started with `ray start --block` in their own process groups
(stopped by killing those groups, never with `ray stop`, which would stop every Ray on the
machine), each with an explicit environment: HOME (so whether ~/.ray/auth_token exists is the
test's choice), no RAY_AUTH_* or D3M_* variables unless given, no PYTHONPATH.

`bare_python` makes an interpreter that has every installed package but not the project: a
venv whose only site entry is a plain path to this interpreter's site-packages, so the
project's editable install (a .pth hook there) is not run and `import core` fails in it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

RAY_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "D3M_RAY_ADDRESS",
            "D3M_NODE_DIR", "PYTHONPATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in RAY_VARS}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", **extra)
    return env


def bare_python(folder: Path) -> Path:
    """A venv's python with this interpreter's packages but without the project."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(folder), "platbase": str(folder)})["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    (site / "packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return folder / "bin" / "python"


class Node:
    """One `ray start --block` process group; `ready()` waits until it reports started."""

    def __init__(self, args: list[str], env: dict, log: Path, python: Path | None = None,
                 wrap: list[str] | None = None):
        cmd = [str(python or sys.executable), "-m", "ray.scripts.scripts", "start", "--block",
               "--disable-usage-stats", *args]
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen((wrap or []) + cmd, env=env, cwd=log.parent, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                time.sleep(0.5)  # the group's other processes (gcs, raylet) exit with it
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of the group left behind
        except ProcessLookupError:
            pass


def ports() -> list[str]:
    """Free ports for a node's own servers (several nodes share this machine)."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]


def head(port: int, env: dict, log: Path, *extra: str) -> Node:
    return Node(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                 f"--ray-client-server-port={free_port()}", *ports(), *extra], env, log)


def worker(port: int, env: dict, log: Path, *extra: str, python: Path | None = None,
           wrap: list[str] | None = None) -> Node:
    return Node([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", *ports(), *extra], env, log,
                python=python, wrap=wrap)
