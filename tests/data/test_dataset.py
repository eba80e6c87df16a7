"""core.data.dataset: loading a dataset folder, one test per kind of bad input, the image cache."""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.config import DataConfig
from core.data.dataset import Dataset, load_dataset
from core.errors import DatasetError, DatasetIssue
from core.data.validate import validate_dataset

HEADER = ["filename", "label", "split", "place"]


def default_rows() -> list[dict[str, str]]:
    """12 rows: labels 10 and 2 x places land/water x splits train/val/test."""
    rows = []
    for label in ("10", "2"):
        for place in ("land", "water"):
            for split in ("train", "val", "test"):
                k = len(rows)
                name = f"img/{k}.png"
                rows.append({"filename": name, "label": label, "split": split, "place": place})
    return rows


def color(k: int) -> tuple[int, int, int]:
    return (10 * k, 200 - 10 * k, 7)


def write_folder(root: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    """metadata.csv plus a solid-colour 8x8 PNG for every row's filename inside root."""
    header = header or list(rows[0])
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    root = root.resolve()
    for k, row in enumerate(rows):
        path = root / row["filename"]
        if row["filename"] and path.resolve().is_relative_to(root):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), color(k)).save(path)
    return root  # resolved, as the paths in issues are


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "data", default_rows())


def load(root: Path, **kwargs) -> Dataset:
    kwargs.setdefault("image_size", 8)
    cache_dir = kwargs.pop("cache_dir", None)
    return load_dataset(DataConfig(str(root), **kwargs), cache_dir=cache_dir)


def expect_issue(
    root: Path,
    file: Path,
    row: int | None,
    column: str | None,
    value: str | None,
    group_attribute: str | None = None,
) -> DatasetIssue:
    """load_dataset raises DatasetError holding exactly one issue with these fields, whose
    text names them all; validate_dataset finds it too; no cache file is written."""
    cache_dir = root.parent / "cache"
    with pytest.raises(DatasetError) as info:
        load(root, group_attribute=group_attribute, cache_dir=cache_dir)
    err = info.value
    fields = (str(file), row, column, value)
    matches = [i for i in err.issues if (i.file, i.row, i.column, i.value) == fields]
    assert len(matches) == 1, err.issues
    issue = matches[0]
    parts = [str(file)] + [p for p in (column, value) if p] + ([f"line {row}"] if row else [])
    for part in parts:
        assert part in str(issue)
        assert part in str(err)
    assert issue in validate_dataset(root, group_attribute)
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
    return issue


# ---------------------------------------------------------------- valid folders


def test_valid_folder_loads(root: Path) -> None:
    assert validate_dataset(root) == []
    ds = load(root, image_size=8)
    assert ds.root == root
    assert ds.images.shape == (12, 8, 8, 3) and ds.images.dtype == np.uint8
    for k in range(12):
        assert tuple(ds.images[k, 3, 3]) == color(k)  # row order kept through the threads
    assert ds.class_names == ["2", "10"]  # integer labels sort numerically
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [1] * 6 + [0] * 6
    assert ds.n_classes == 2
    assert ds.attributes == ["place"]
    assert list(ds.metadata.columns) == HEADER and len(ds.metadata) == 12
    assert ds.split.tolist() == [r["split"] for r in default_rows()]
    assert ds.idx("val").tolist() == [1, 4, 7, 10] and ds.idx("val").dtype == np.int64
    assert ds.idx("train").tolist() == [0, 3, 6, 9]


def test_groups_default_to_classes(root: Path) -> None:
    ds = load(root)
    assert ds.group_names == ds.class_names
    assert np.array_equal(ds.groups, ds.labels) and ds.groups.dtype == np.int64
    assert ds.group_class().tolist() == [0, 1]


def test_groups_from_label_and_attribute(root: Path) -> None:
    ds = load(root, group_attribute="place")
    assert ds.group_names == [
        "label=2, place=land",
        "label=2, place=water",
        "label=10, place=land",
        "label=10, place=water",
    ]
    assert ds.groups.tolist() == [2] * 3 + [3] * 3 + [0] * 3 + [1] * 3
    assert ds.n_groups == 4
    assert ds.group_class().tolist() == [0, 0, 1, 1]


def test_groups_from_group_column(tmp_path: Path) -> None:
    rows = default_rows()
    for row in rows:
        row["group"] = "mixed" if row["place"] == "water" else f"g{row['label']}"
    root = write_folder(tmp_path / "data", rows)
    ds = load(root, group_attribute="place")  # a group column wins over group_attribute
    assert ds.group_names == ["g10", "g2", "mixed"]
    assert ds.groups.tolist() == [0] * 3 + [2] * 3 + [1] * 3 + [2] * 3
    assert ds.attributes == ["place"]
    assert ds.group_class().tolist() == [1, 0, -1]  # 'mixed' spans both classes


def test_string_labels_sort_alphabetically(tmp_path: Path) -> None:
    rows = default_rows()
    for row in rows:
        row["label"] = {"10": "waterbird", "2": "landbird"}[row["label"]]
    ds = load(write_folder(tmp_path / "data", rows))
    assert ds.class_names == ["landbird", "waterbird"]
    assert ds.labels.tolist() == [1] * 6 + [0] * 6


def test_images_resized_and_converted_to_rgb(root: Path) -> None:
    Image.new("L", (8, 8), 128).save(root / "img/0.png")
    Image.new("RGBA", (8, 8), (10, 20, 30, 40)).save(root / "img/1.png")
    Image.new("RGB", (20, 6), (1, 2, 3)).save(root / "img/2.jpg")
    (root / "img/2.png").unlink()
    text = (root / "metadata.csv").read_text().replace("img/2.png", "img/2.jpg")
    (root / "metadata.csv").write_text(text)
    ds = load(root, image_size=16)
    assert ds.images.shape == (12, 16, 16, 3)
    assert tuple(ds.images[0, 5, 5]) == (128, 128, 128)
    assert tuple(ds.images[1, 5, 5]) == (10, 20, 30)
    assert np.abs(ds.images[2, 8, 8].astype(int) - (1, 2, 3)).max() <= 3  # JPEG is lossy


def test_blank_lines_and_spaces_are_tolerated(root: Path) -> None:
    lines = (root / "metadata.csv").read_text().splitlines()
    lines.insert(3, "")
    lines[2] = lines[2].replace(",val,", ", val ,")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n\n")
    ds = load(root)
    assert len(ds.metadata) == 12 and ds.split[1] == "val" and ds.split[2] == "test"


def test_blank_lines_count_in_reported_line_numbers(root: Path) -> None:
    lines = (root / "metadata.csv").read_text().splitlines()
    lines.insert(1, "")
    lines[3] = lines[3].replace(",val,", ",tran,")  # data row 2, now on line 4
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    expect_issue(root, root / "metadata.csv", 4, "split", "tran")


def test_progress_is_reported(root: Path) -> None:
    calls = []
    load_dataset(DataConfig(str(root)), report=lambda *args: calls.append(args))
    assert calls[0] == ("loading images", 0, 12) and calls[-1] == ("loading images", 12, 12)


# ---------------------------------------------------------------- one test per bad input


def test_missing_metadata_csv(tmp_path: Path) -> None:
    root = tmp_path.resolve() / "data"
    root.mkdir()
    issue = expect_issue(root, root / "metadata.csv", None, None, None)
    assert "does not exist" in str(issue)


def test_empty_metadata_csv(root: Path) -> None:
    (root / "metadata.csv").write_text("")
    assert "is empty" in str(expect_issue(root, root / "metadata.csv", None, None, None))


def test_missing_required_column(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", default_rows(), header=["filename", "label", "place"])
    issue = expect_issue(root, root / "metadata.csv", None, "split", None)
    assert "has no 'split' column" in str(issue)


def test_unknown_group_attribute(root: Path) -> None:
    issue = expect_issue(root, root / "metadata.csv", None, "colour", "colour", "colour")
    assert "attribute columns: place" in str(issue)


def test_unknown_split_value(root: Path) -> None:
    rows = default_rows()
    rows[3]["split"] = "tran"
    write_folder(root, rows)
    expect_issue(root, root / "metadata.csv", 5, "split", "tran")


def test_empty_label_cell(root: Path) -> None:
    rows = default_rows()
    rows[2]["label"] = ""
    write_folder(root, rows)
    assert "empty" in str(expect_issue(root, root / "metadata.csv", 4, "label", ""))


def test_filename_with_dotdot(root: Path) -> None:
    Image.new("RGB", (8, 8)).save(root.parent / "outside.png")
    rows = default_rows()
    rows[0]["filename"] = "img/../../outside.png"
    write_folder(root, rows)
    issue = expect_issue(root, root / "metadata.csv", 2, "filename", "img/../../outside.png")
    assert "escapes the dataset folder" in str(issue)


def test_absolute_filename(root: Path) -> None:
    absolute = str(root / "img/0.png")  # exists, and even lies inside the folder
    rows = default_rows()
    rows[0]["filename"] = absolute
    write_folder(root, rows)
    issue = expect_issue(root, root / "metadata.csv", 2, "filename", absolute)
    assert "absolute path" in str(issue)


def test_missing_image(root: Path) -> None:
    (root / "img/4.png").unlink()
    issue = expect_issue(root, root / "img/4.png", 6, "filename", "img/4.png")
    assert "does not exist" in str(issue)
    assert validate_dataset(root, check_images=False) == [issue]  # existence is always checked


def test_unreadable_image(root: Path) -> None:
    (root / "img/5.png").write_bytes(b"this is not a png")
    issue = expect_issue(root, root / "img/5.png", 7, "filename", "img/5.png")
    assert "cannot be read (UnidentifiedImageError" in str(issue)
    assert validate_dataset(root, check_images=False) == []  # the fast path opens no image


def test_duplicate_filename(root: Path) -> None:
    rows = default_rows()
    rows[6]["filename"] = "img/./1.png"
    write_folder(root, rows)
    issue = expect_issue(root, root / "metadata.csv", 8, "filename", "img/./1.png")
    assert "already used on line 3" in str(issue)  # names both rows


def test_class_absent_from_val(root: Path) -> None:
    rows = default_rows()
    for row in rows:
        if row["label"] == "10" and row["split"] == "val":
            row["split"] = "test"
    write_folder(root, rows)
    issue = expect_issue(root, root / "metadata.csv", None, "label", "10")
    assert "class '10'" in str(issue) and "'val' split" in str(issue)


def test_class_absent_from_train(root: Path) -> None:
    rows = default_rows()
    for row in rows:
        if row["label"] == "2" and row["split"] == "train":
            row["split"] = "val"
    write_folder(root, rows)
    issue = expect_issue(root, root / "metadata.csv", None, "label", "2")
    assert "'train' split" in str(issue)


def test_group_column_group_without_val_examples(root: Path) -> None:
    rows = default_rows()
    for row in rows:
        row["group"] = "rare" if row["split"] != "val" and row["place"] == "water" else "common"
    write_folder(root, rows)
    issue = expect_issue(root, root / "metadata.csv", None, "group", "rare")
    assert "'val' split" in str(issue)


def test_attribute_group_without_val_examples(root: Path) -> None:
    rows = default_rows()
    rows[0]["place"] = "desert"  # a train row: (10, desert) has no val example
    write_folder(root, rows)
    expect_issue(root, root / "metadata.csv", None, "place", "label=10, place=desert", "place")
    assert validate_dataset(root) == []  # without the attribute, groups are classes: fine


def test_group_absent_from_train_is_allowed(root: Path) -> None:
    rows = default_rows()
    rows.append({"filename": "img/12.png", "label": "10", "split": "val", "place": "desert"})
    write_folder(root, rows)
    assert validate_dataset(root, "place") == []


# ---------------------------------------------------------------- errors and the cache


def test_error_lists_at_most_20_issues(root: Path) -> None:
    rows = [dict(row) for row in default_rows() * 3]
    for k, row in enumerate(rows):
        row["filename"] = f"img/{k % 12}.png"  # 24 duplicates
    write_folder(root, rows)
    with pytest.raises(DatasetError) as info:
        load(root)
    assert len(info.value.issues) == 24
    assert str(info.value).count("\n- ") == 20 and "... and 4 more" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert pickle.loads(pickle.dumps(info.value)).issues == info.value.issues


def test_cache_hit_opens_no_image(root: Path, tmp_path: Path, monkeypatch) -> None:
    cache_dir = tmp_path / "cache"
    first = load(root, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("images-*.npy"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened on a cache hit")

    monkeypatch.setattr(Image, "open", refuse)
    second = load(root, cache_dir=cache_dir)
    assert np.array_equal(first.images, second.images)
    assert isinstance(second.images, np.memmap)
    assert np.array_equal(first.labels, second.labels)


def test_changed_image_invalidates_cache(root: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = load(root, cache_dir=cache_dir)
    path = root / "img/0.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load(root, cache_dir=cache_dir)
    assert tuple(second.images[0, 0, 0]) == (1, 2, 3) != tuple(first.images[0, 0, 0])
    assert np.array_equal(first.images[1:], second.images[1:])
    assert len(list(cache_dir.glob("images-*.npy"))) == 2


def test_image_size_changes_cache_key(root: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    assert load(root, image_size=8, cache_dir=cache_dir).images.shape[1] == 8
    assert load(root, image_size=4, cache_dir=cache_dir).images.shape[1] == 4


def test_reused_loads_once_per_block(tiny_sample, tmp_path, monkeypatch):
    """Inside `reused()` a second load of the same dataset checks nothing again; an edited
    table, another cache folder or leaving the block loads it afresh."""
    import shutil

    from core.data import dataset

    root = tmp_path / "copy"
    shutil.copytree(tiny_sample, root)
    inspected = []
    real = dataset.inspect
    monkeypatch.setattr(dataset, "inspect", lambda *a: inspected.append(a[0]) or real(*a))
    cfg = DataConfig(root=str(root))
    with dataset.reused():
        first = load_dataset(cfg, cache_dir=tmp_path / "c")
        assert load_dataset(cfg, cache_dir=tmp_path / "c") is first and len(inspected) == 1
        assert load_dataset(cfg, cache_dir=tmp_path / "other") is not first and len(inspected) == 2
        table = root / "metadata.csv"
        table.write_text(table.read_text().replace(",train,", ",val,", 1))
        edited = load_dataset(cfg, cache_dir=tmp_path / "c")
        assert edited is not first and (edited.split == "val").sum() == (first.split == "val").sum() + 1
    assert load_dataset(cfg, cache_dir=tmp_path / "c") is not edited and len(inspected) == 4
