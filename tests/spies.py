"""Spies shared by the tests: what the methods asked core.train.training.train to do."""
from __future__ import annotations

from contextlib import contextmanager

import pytest

import core.train.training


@contextmanager
def recorded_training():
    """Spy on core.train.training.train (what fit() calls): yields the (model, kwargs) of each call."""
    calls = []
    real = core.train.training.train

    def spy(model, *args, **kwargs):
        calls.append((model, kwargs))
        return real(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core.train.training, "train", spy)
        yield calls
