"""Benchmarks that loop over methods keep going past a failing one: its row says why."""
from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """'ValueError: first line of the message': the reason a failed row shows."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
