"""Ray for studies and ensembles: start or join it with the project's code shipped to every
node, and what the cluster offers (its nodes, their CPUs, GPUs and memory).

Code: the job's runtime environment has the checkout as its `working_dir` with everything
but core/ excluded (work directories, venvs, data, tests, .git), so Ray uploads core/ once per
job (about 0.3 MB) and every worker, on every node, imports it from its own copy, first on its
path. A node needs only the same Python packages (`pip install -e .` of the same checkout, or
`pip install` of the same versions). A `working_dir` also keeps Ray from putting the driver's
current folder on the workers' path, where a node with an older checkout at the same place
would import that instead.

Token authentication (Ray >= 2.52; Ray 2.60 turns it on for a head started where a token
exists, ~/.ray/auth_token, which Ray writes itself after a local `ray.init()`): the driver must
then run with RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN or
RAY_AUTH_TOKEN_PATH). Ray does not turn it on for a driver that names an address, so a join that
fails says which of the two is missing (`join_failure`).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import ray

from core.config import PROJECT_ROOT

SHIPPED = "core"  # the only folder of the checkout a worker needs


class ClusterError(ValueError):
    """The cluster cannot run this study as it is (join refused, a node's data, GPUs, memory)."""


def runtime_env(root: Path = PROJECT_ROOT) -> dict:
    """The job's runtime environment: core/ as the working_dir, one BLAS/OpenMP thread per task."""
    excludes = sorted(f"/{p.name}" for p in root.iterdir() if p.name != SHIPPED)
    return {"working_dir": str(root), "excludes": excludes + ["__pycache__/", "*.pyc"],
            "env_vars": {"OMP_NUM_THREADS": "1"}}


def connect(address: str | None = None, num_cpus: int | None = None, attempts: int = 3) -> bool:
    """Start or join Ray unless this process already has it; True when this call started it.

    With an address (or D3M_RAY_ADDRESS) it joins that cluster; a refused join raises one
    ClusterError line saying what is missing. Else a local Ray with `num_cpus` (default all
    cores), tried again when Ray gives up waiting for its own processes (a fixed 30 s, which a
    heavily loaded machine can exceed)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("D3M_RAY_ADDRESS") or None
    if address:
        try:
            ray.init(address=address, runtime_env=runtime_env(), log_to_driver=False)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
            ray.shutdown()
            raise ClusterError(join_failure(address, exc)) from None
        return True
    for attempt in range(attempts):
        try:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                     runtime_env=runtime_env(), log_to_driver=False)
            return True
        except Exception as exc:  # noqa: BLE001  (Ray raises a bare Exception for this)
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
    return True


def token_source() -> str | None:
    """Where Ray would read this machine's token from, if it has one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" if Path(path).is_file() else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def join_failure(address: str, exc: BaseException) -> str:
    """Why joining `address` failed, in one line: nothing listening, or which part of token
    authentication (RAY_AUTH_MODE=token here, the cluster's token) this driver lacks."""
    cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    head = f"could not join the Ray cluster at {address} ({cause})"
    host, _, port = address.rpartition(":")
    if port.isdigit() and not _answers(host, int(port)):
        return f"{head}: nothing answers there; start its head with `ray start --head --port {port}` or fix the address"
    source = token_source()
    fetch = "copy the head's token (`ray get-auth-token` on the head) to ~/.ray/auth_token here or set RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        token = f"this machine has one in {source}" if source else f"this machine has none: {fetch}"
        return (f"{head}: the cluster most likely requires token authentication and RAY_AUTH_MODE is "
                f"{os.environ.get('RAY_AUTH_MODE') or 'unset'} here; export RAY_AUTH_MODE=token and give "
                f"this driver the cluster's token ({token})")
    if source is None:
        return f"{head}: RAY_AUTH_MODE=token but this machine has no token; {fetch}"
    return f"{head}: the cluster refused the token in {source}; {fetch}"


def _answers(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def address() -> str:
    """The address of the Ray this process is connected to (for another driver to join)."""
    return ray.get_runtime_context().gcs_address


def shutdown() -> None:
    ray.shutdown()


@dataclass(frozen=True)
class Node:
    """A live Ray node and what it offers to tasks (memory: Ray's logical memory, bytes)."""

    id: str
    name: str
    ip: str
    cpus: float
    gpus: float
    memory: float

    @property
    def label(self) -> str:
        """How errors name it: its node name (the IP unless `ray start --node-name`) and id."""
        return f"{self.name} ({self.ip}, node id {self.id[:12]})" if self.name != self.ip else \
            f"{self.ip} (node id {self.id[:12]})"


def nodes() -> list[Node]:
    """The cluster's live nodes that can run tasks (any CPU or GPU)."""
    out = []
    for n in ray.nodes():
        res = n.get("Resources", {})
        if n.get("Alive") and (res.get("CPU", 0) > 0 or res.get("GPU", 0) > 0):
            out.append(Node(n["NodeID"], n.get("NodeName") or n["NodeManagerAddress"], n["NodeManagerAddress"],
                            res.get("CPU", 0.0), res.get("GPU", 0.0), res.get("memory", 0.0)))
    return out


def this_node() -> dict:
    """The node this Ray worker or driver runs on: {"id", "name"} (empty outside Ray)."""
    if not ray.is_initialized():
        return {}
    node_id = ray.get_runtime_context().get_node_id()
    names = [n.get("NodeName") or n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id]
    return {"id": node_id, "name": names[0] if names else None}
