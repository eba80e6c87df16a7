"""One clear line per error, for the CLI, the pages and a failed run's status.

`describe(exc)` says what failed and the path, value or option at fault, without a
traceback: file-system errors by kind (permission, not a directory, disk full, ...), a
dataset's problems by file/line/column, everything else as `Type: message`.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from core.dataset_errors import DatasetError

_OS_KINDS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "not a directory (a file is in the way)",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
}


def describe(exc: BaseException) -> str:
    """What went wrong, in one line (a DatasetError keeps its list, one issue per line)."""
    if isinstance(exc, DatasetError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return describe_os_error(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # str(KeyError) would quote the message
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def describe_os_error(exc: OSError) -> str:
    """'disk full (no space left on device): /work/runs/x/scores.npy' and the like."""
    kind = _OS_KINDS.get(exc.errno) or (exc.strerror or os.strerror(exc.errno)).lower()
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{kind}: {' -> '.join(paths)}" if paths else kind


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def check_workdir(workdir: str | Path, write: bool = True) -> Path:
    """The work directory, refused in one line when it cannot hold runs: a file in the way,
    or (`write`) a folder this user cannot write (a missing one is created later)."""
    path = Path(workdir)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
            if write and not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(parent))
            break
    return path
