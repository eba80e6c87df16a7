"""Runs on disk: the store (one folder per run), process liveness, background jobs by name,
per-stage completion markers and user annotations."""
from core.runs.store import ACTIVE_STATES, Run, RunStore

__all__ = ["ACTIVE_STATES", "Run", "RunStore"]
