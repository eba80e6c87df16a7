"""Thumbnails of large (224 px) images are averaged down, small ones enlarged pixel for pixel."""
from __future__ import annotations

import numpy as np

from core.views.data import thumbnail


def test_a_224_px_image_shrinks_without_aliasing():
    stripes = np.zeros((224, 224, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: their average is mid-grey
    thumb = thumbnail(stripes, 64)
    assert thumb.shape == (64, 64, 3)
    assert thumb.min() >= 64 and thumb.max() <= 192  # nearest neighbour gives pure black or white
    assert abs(thumb.mean() - 127.5) < 5


def test_a_small_image_is_enlarged_pixel_for_pixel():
    small = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(thumbnail(small, 8), small.repeat(2, axis=0).repeat(2, axis=1))
