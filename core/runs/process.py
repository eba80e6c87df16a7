"""Whether a job's process is alive, and how it died: the liveness every status read uses."""
from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path


def utcnow() -> str:
    """Now as an ISO-8601 UTC string (microseconds, so creation order sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def reap(pid: int) -> int | None:
    """The wait status of `pid` if it is our own child and has exited (reaping it, so it
    does not linger as a zombie); None if it runs or is not our child."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):  # not our child: another process started it
        return None
    if done == 0:
        return None
    _EXIT_STATUS[pid] = status
    return status


def reap_exited(pid: int, tries: int = 20) -> int | None:
    """The wait status of an exited child of ours (it may take a moment to become reapable);
    None at once if it is not our child."""
    for _ in range(tries):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            return _EXIT_STATUS.get(pid)
        if done:
            _EXIT_STATUS[pid] = status
            return status
        time.sleep(0.01)
    return None


_EXIT_STATUS: dict[int, int] = {}  # pids reaped here, so a later refresh still knows the signal


def died_message(pid: int, exit_status: int | None = None) -> str:
    """ "job process died" with how, when this process reaped it (else: unknown)."""
    exit_status = _EXIT_STATUS.get(pid) if exit_status is None else exit_status
    if exit_status is not None and os.WIFSIGNALED(exit_status):
        sig = os.WTERMSIG(exit_status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        how = f"killed by {name} (signal {sig})" + (", e.g. kill -9 or out of memory" if sig == 9 else "")
    elif exit_status is not None and os.WIFEXITED(exit_status):
        how = f"exited with code {os.WEXITSTATUS(exit_status)} without recording a result"
    else:
        how = "exit signal unknown: killed, out of memory or a reboot"
    return f"job process died (pid {pid}, {how}); see log.txt"


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists and is not a zombie.

    `os.kill(pid, 0)` succeeds for zombies (exited, not yet reaped), so on Linux the state
    letter in /proc/<pid>/stat is checked too.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs, or it exited meanwhile: trust os.kill
        return True
    # "pid (comm) S ...": comm may contain spaces and parentheses, the state follows the last ")".
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def signal_group(pid: int, sig: int) -> None:
    """Signal the job's whole process group (it leads one: DataLoader workers die with it)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:  # not a group leader (an inline run in another process): that process only
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def gone(pid: int) -> bool:
    """Whether the job process has exited (reaped first if it is our own child)."""
    reap(pid)
    return not pid_alive(pid)
