"""Spies shared by the tests: what the methods asked core.training.train to do."""
from __future__ import annotations

from contextlib import contextmanager

import pytest

import core.training


@contextmanager
def recorded_training():
    """Spy on core.training.train (what fit() calls): yields the (model, kwargs) of each call."""
    calls = []
    real = core.training.train

    def spy(model, *args, **kwargs):
        calls.append((model, kwargs))
        return real(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core.training, "train", spy)
        yield calls
