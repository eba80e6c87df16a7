"""Images decoded once into an on-disk uint8 memory map; the checked table cached as parquet
(issue 20, part 2)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data import dataset as dataset_module
from core.errors import DatasetError
from tests.data.test_dataset import color, default_rows, load, write_folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "data", default_rows())


@pytest.mark.parametrize("cached", [True, False])
def test_images_are_a_read_only_memory_map(root, tmp_path, cached):
    data = load(root, image_size=8, cache_dir=tmp_path / "cache" if cached else None)
    assert isinstance(data.images, np.memmap) and not data.images.flags.writeable
    assert [tuple(data.images[k, 3, 3]) for k in range(12)] == [color(k) for k in range(12)]
    with pytest.raises(ValueError, match="read-only"):
        data.images[0, 0, 0, 0] = 1
    if cached:
        (cache,) = (tmp_path / "cache").glob("images-*.npy")
        assert np.array_equal(np.load(cache), data.images)
        assert not list((tmp_path / "cache").glob("*.tmp"))


def test_the_resize_rule_is_part_of_the_image_cache_key(root, tmp_path):
    cache = tmp_path / "cache"
    squash = load(root, image_size=8, cache_dir=cache)
    crop = load(root, image_size=8, resize=10, cache_dir=cache)
    assert len(list(cache.glob("images-*.npy"))) == 2
    assert np.array_equal(squash.images, crop.images)  # solid colours: any rule gives the same pixels


def test_a_checked_table_is_read_back_without_checking_it_again(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load(root, cache_dir=cache)
    (table,) = cache.glob("table-*.parquet")

    def refuse(*args, **kwargs):
        raise AssertionError("the table was parsed and checked again")

    monkeypatch.setattr(dataset_module, "inspect", refuse)
    second = load(root, cache_dir=cache)
    pd.testing.assert_frame_equal(second.metadata, first.metadata)
    assert second.metadata.index.tolist() == list(range(12))  # ids stay row positions
    for name in ("labels", "groups", "split", "images"):
        assert np.array_equal(getattr(second, name), getattr(first, name)), name
    assert (second.class_names, second.group_names, second.attributes) == \
        (first.class_names, first.group_names, first.attributes)
    assert list(pd.read_parquet(table)["__line__"]) == list(range(2, 14))  # metadata.csv line numbers


def test_an_edited_table_is_checked_again(root, tmp_path):
    cache = tmp_path / "cache"
    load(root, cache_dir=cache)
    rows = default_rows()
    rows[0]["split"] = "training"
    write_folder(root, rows)
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        load(root, cache_dir=cache)
    assert len(list(cache.glob("table-*.parquet"))) == 1  # the table with a problem is not cached
    rows[0]["split"] = "val"
    write_folder(root, rows)
    assert load(root, cache_dir=cache).split[0] == "val"
    assert len(list(cache.glob("table-*.parquet"))) == 2


def test_the_table_is_cached_only_once_its_images_decoded(root, tmp_path):
    (root / "img/3.png").write_bytes(b"not a png")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="img/3.png cannot be read"):
        load(root, cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())
