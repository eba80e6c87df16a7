"""What is wrong with a dataset: one `DatasetIssue` per problem, raised together as `DatasetError`.

Row numbers are metadata.csv line numbers as a spreadsheet shows them: the header is line 1,
the first data row line 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
