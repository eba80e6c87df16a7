"""Confining the dashboard's path boxes when the app is served to a team.

With `D3M_DATA_ROOT` set, every folder typed in the dashboard (dataset folder, work
directory) must lie inside that tree: `..`, an absolute path elsewhere and a symlink that
leads out are refused with a one-line message. Unset, any path is accepted (a local app).
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "D3M_DATA_ROOT"


def data_root() -> Path | None:
    """The configured root (resolved), or None when paths are not confined."""
    value = os.environ.get(ENV, "").strip()
    return Path(value).resolve() if value else None


def confine(text: str, what: str, root: Path | None = None) -> Path:
    """The path typed in box `what`, relative paths taken inside the root; ValueError naming
    the box and the value when it would leave the root."""
    root = data_root() if root is None else root
    raw = Path(text.strip())
    if root is None:
        return raw
    if not text.strip():
        raise ValueError(f"{what}: empty; give a folder inside {root}")
    if ".." in raw.parts:
        raise ValueError(f"{what} {text!r}: '..' is not allowed; give a folder inside {root} ({ENV})")
    resolved = (raw if raw.is_absolute() else root / raw).resolve()  # follows symlinks
    if not resolved.is_relative_to(root):
        how = "leads out of" if not raw.is_absolute() or Path(os.path.abspath(raw)).is_relative_to(root) \
            else "is outside"
        raise ValueError(f"{what} {text!r} {how} {root} ({ENV}): only folders inside it can be used")
    return resolved
