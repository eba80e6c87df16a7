"""A dataset's fingerprint tells a faithful copy from another one, and names the first difference."""
from __future__ import annotations

import os
import shutil

import pytest
from PIL import Image

from core.config import DataConfig
from core.data.fingerprint import SAMPLE, difference, fingerprint
from core.errors import DatasetError


def rows(root):
    return [line.split(",")[0] for line in (root / "metadata.csv").read_text().splitlines()[1:] if line]


@pytest.mark.parametrize("name", ["tiny_sample", "tiny_multiclass"])
def test_a_copy_matches_and_another_copy_is_named(name, request, tmp_path):
    root = request.getfixturevalue(name)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new mtimes: a faithful copy still matches
    here = fingerprint(DataConfig(root=str(root)))
    assert difference(here, fingerprint(DataConfig(root=str(copy)))) is None
    assert len(here["sizes"]) == len(rows(root))

    victim = rows(root)[7]
    Image.open(copy / victim).convert("RGB").resize((5, 5)).save(copy / victim)
    changed = fingerprint(DataConfig(root=str(copy)))
    assert difference(here, changed) == (f"image {victim} is {os.path.getsize(copy / victim)} bytes there, "
                                         f"{os.path.getsize(root / victim)} here")

    table = (copy / "metadata.csv").read_text()
    (copy / "metadata.csv").write_text(table.replace(",train,", ",val,", 1))
    assert difference(here, fingerprint(DataConfig(root=str(copy)))).startswith("its metadata.csv differs (SHA-256 ")


def test_same_sizes_but_other_bytes_in_a_sampled_image(tiny_sample, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sample, copy)
    first = copy / rows(tiny_sample)[0]  # the first image is always sampled
    data = bytearray(first.read_bytes())
    data[-3] ^= 0xFF  # same size, other content
    first.write_bytes(bytes(data))
    here, there = fingerprint(DataConfig(root=str(tiny_sample))), fingerprint(DataConfig(root=str(copy)))
    assert difference(here, there) == (f"the contents of some of {SAMPLE} sampled images differ "
                                       "(same table, same file sizes)")


def test_a_missing_image_is_a_dataset_error(tiny_sample, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sample, copy)
    (copy / rows(tiny_sample)[3]).unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        fingerprint(DataConfig(root=str(copy)))
