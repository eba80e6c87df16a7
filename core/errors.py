"""One clear line per error, for the CLI, the pages and a failed run's status.

`describe(exc)` says what failed and the path, value or option at fault, without a
traceback: file-system errors by kind (permission, not a directory, disk full, ...), a
dataset's problems by file/line/column, everything else as `Type: message`.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

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


# What is wrong with a dataset: one `DatasetIssue` per problem, raised together as `DatasetError`.
# Row numbers are metadata.csv line numbers as a spreadsheet shows them: the header is line 1,
# the first data row line 2.
_MAX_LISTED = 20


@dataclass(frozen=True)
class DatasetIssue:
    """One problem with a dataset folder.

    `file` is the file at fault (metadata.csv or an image), `row` the metadata.csv line number
    (header = line 1), `column`/`value` the cell at fault. The message names all of them.
    """

    message: str
    file: str
    row: int | None = None
    column: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        return self.message


class DatasetError(ValueError):
    """Raised by `load_dataset` on invalid data; `issues` holds every problem found."""

    def __init__(self, issues: list[DatasetIssue]):
        super().__init__(list(issues))  # args stay the issues, so the error pickles
        self.issues = list(issues)

    def __str__(self) -> str:
        lines = [f"- {issue}" for issue in self.issues[:_MAX_LISTED]]
        if len(self.issues) > _MAX_LISTED:
            lines.append(f"... and {len(self.issues) - _MAX_LISTED} more")
        return f"the dataset has {len(self.issues)} problem(s):\n" + "\n".join(lines)


def csv_issue(
    csv: Path, detail: str, column: str | None = None, value: str | None = None
) -> DatasetIssue:
    return DatasetIssue(f"{csv}{detail}", str(csv), None, column, value)


def row_issue(
    csv: Path, line: int, column: str, value: str, detail: str, file: Path | None = None
) -> DatasetIssue:
    message = f"{csv}, line {line}, column '{column}': {detail}"
    return DatasetIssue(message, str(file or csv), int(line), column, value)


def brief(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
