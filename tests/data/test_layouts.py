"""core.data.layouts: Waterbirds and CelebA folders (tiny fixtures) imported without copying images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.cli import main as cli_main
from core.config import DataConfig
from core.errors import DatasetError
from core.data.dataset import load_dataset
from core.data.layouts import import_celeba, import_waterbirds

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def image(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (10 * k % 256, 50, 100)).save(path)  # JPEG: about 10k


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def waterbirds(tmp_path: Path) -> Path:
    """Waterbirds layout: 2 images per (y, place, split), in species folders."""
    root, rows = tmp_path / "waterbird_complete95", []
    for y in (0, 1):
        for place in (0, 1):
            for split in (0, 1, 2):
                for _ in range(2):
                    k = len(rows)
                    name = f"{k:03d}.Species_{y}/img_{k}.jpg"
                    image(root / name, k)
                    rows.append({"img_id": k + 1, "img_filename": name, "y": y, "split": split,
                                 "place": place, "place_filename": f"/x/places/{k}.jpg"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_waterbirds_import_loads_without_copies(waterbirds):
    before, original = files_under(waterbirds), (waterbirds / "metadata.csv").read_bytes()
    out = import_waterbirds(waterbirds)
    assert files_under(waterbirds) - before == {out} and (waterbirds / "metadata.csv").read_bytes() == original
    data = load_dataset(DataConfig(str(waterbirds), image_size=6, metadata=out.name))
    raw = pd.read_csv(waterbirds / "metadata.csv")
    assert data.class_names == ["landbird", "waterbird"]
    assert np.array_equal(data.labels, raw["y"].to_numpy())
    assert list(data.split) == [("train", "val", "test")[s] for s in raw["split"]]
    names = np.asarray(data.group_names)[data.groups]
    expected = [f"{('landbird', 'waterbird')[y]} on {('land', 'water')[p]}" for y, p in zip(raw["y"], raw["place"])]
    assert list(names) == expected and data.attributes == ["place"]
    assert abs(int(data.images[5, 0, 0, 0]) - 50) <= 4  # image k is red 10k: the right file
    same = load_dataset(DataConfig(str(out), image_size=6))  # root may name the table itself
    assert np.array_equal(same.images, data.images) and same.group_names == data.group_names


def test_waterbirds_bad_value_names_line_column_value(waterbirds):
    raw = pd.read_csv(waterbirds / "metadata.csv")
    raw.loc[4, "y"] = 2
    lines = raw.to_csv(index=False).splitlines()
    (waterbirds / "metadata.csv").write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")  # a blank line 3
    with pytest.raises(DatasetError) as err:
        import_waterbirds(waterbirds)
    (issue,) = err.value.issues
    assert (issue.row, issue.column, issue.value) == (7, "y", "2")
    assert "metadata.csv, line 7, column 'y'" in str(err.value) and "'2'" in str(err.value)


def test_waterbirds_missing_file_or_column_or_image(waterbirds):
    name = pd.read_csv(waterbirds / "metadata.csv")["img_filename"][3]
    (waterbirds / name).unlink()
    with pytest.raises(DatasetError) as err:
        import_waterbirds(waterbirds)
    (issue,) = err.value.issues
    assert (issue.row, issue.column, issue.value) == (5, "img_filename", name) and "does not exist" in str(issue)
    pd.read_csv(waterbirds / "metadata.csv").drop(columns="place").to_csv(waterbirds / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match="no 'place' column"):
        import_waterbirds(waterbirds)
    (waterbirds / "metadata.csv").unlink()
    with pytest.raises(DatasetError, match=r"metadata.csv: does not exist"):
        import_waterbirds(waterbirds)


def write_celeba(root: Path, young_male: dict[str, tuple[int, int, int, int]], seed: int = 0) -> pd.DataFrame:
    """CelebA layout. young_male[split] = counts of (young woman, young man, old man, old woman);
    the other 38 attributes are random. Returns the attribute table written (+1/-1)."""
    rng = np.random.default_rng(seed)
    cells = [(1, -1), (1, 1), (-1, 1), (-1, -1)]
    rows, parts = [], []
    for split_code, split in enumerate(("train", "val", "test")):
        for (young, male), n in zip(cells, young_male[split]):
            for _ in range(n):
                values = rng.choice([-1, 1], len(CELEBA_ATTRS))
                values[CELEBA_ATTRS.index("Young")], values[CELEBA_ATTRS.index("Male")] = young, male
                rows.append(values)
                parts.append(split_code)
    names = [f"{i + 1:06d}.jpg" for i in range(len(rows))]
    for k, name in enumerate(names):
        image(root / "img_align_celeba" / name, k)
    lines = [str(len(rows)), " ".join(CELEBA_ATTRS) + " "]
    lines += [f"{n} " + " ".join(f"{v:2d}" for v in r) for n, r in zip(names, rows)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    return pd.DataFrame(rows, index=names, columns=CELEBA_ATTRS)


@pytest.fixture
def celeba(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    root = tmp_path / "celeba"
    return root, write_celeba(root, {"train": (30, 11, 17, 8), "val": (3, 2, 2, 2), "test": (2, 2, 2, 2)})


def test_celeba_blond_import(celeba):
    root, attrs = celeba
    before = files_under(root)
    out = import_celeba(root, "Blond_Hair", "Male")
    assert files_under(root) - before == {out}
    data = load_dataset(DataConfig(str(out), image_size=6))
    assert data.class_names == ["Blond_Hair", "not Blond_Hair"] and len(data.labels) == len(attrs)
    assert np.array_equal(data.labels == 0, attrs["Blond_Hair"].to_numpy() == 1)
    assert data.attributes == [a for a in CELEBA_ATTRS if a not in ("Blond_Hair", "Male")] and len(data.attributes) == 38
    assert set(data.metadata["Young"]) == {"yes", "no"}
    assert np.array_equal(data.metadata["Smiling"] == "yes", attrs["Smiling"].to_numpy() == 1)
    names = np.asarray(data.group_names)[data.groups]
    assert np.array_equal(np.char.endswith(names.astype(str), ", Male"), attrs["Male"].to_numpy() == 1)
    assert abs(int(data.images[3, 0, 0, 0]) - 30) <= 4


def test_celeba_age_subsample_is_4_to_1_per_class(celeba):
    root, attrs = celeba
    data = load_dataset(DataConfig(str(import_celeba(root, "Young", "Male", majority_ratio=4)), image_size=6))
    train = data.idx("train")
    counts = pd.Series(np.asarray(data.group_names)[data.groups[train]]).value_counts()
    young_major, young_minor = counts["Young, not Male"], counts["Young, Male"]
    old_major, old_minor = counts["not Young, Male"], counts["not Young, not Male"]
    assert young_major == 4 * young_minor and old_major == 4 * old_minor  # young women, old men dominate
    raw = attrs[:66]  # the training rows as written
    n_yw, n_ym = ((raw.Young == 1) & (raw.Male == -1)).sum(), ((raw.Young == 1) & (raw.Male == 1)).sum()
    assert young_minor == min(n_ym, n_yw // 4) > 0  # as many minority examples as the ratio allows
    assert (data.split != "train").sum() == (len(attrs) - 66)  # val and test untouched
    kept = set(data.metadata["filename"])
    assert kept <= {f"img_align_celeba/{n}" for n in attrs.index}
    capped = load_dataset(DataConfig(str(import_celeba(root, "Young", "Male", 4, train_size=20)), image_size=6))
    assert (capped.split == "train").sum() <= 20


def test_celeba_errors_name_file_line_column_value(celeba):
    root, _ = celeba
    attr = root / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[4] = lines[4].replace(" 1", " 0", 1)
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as err:
        import_celeba(root, "Blond_Hair", "Male")
    (issue,) = err.value.issues
    assert issue.row == 5 and issue.value == "0" and issue.column in CELEBA_ATTRS
    assert f"list_attr_celeba.txt, line 5, column '{issue.column}'" in str(issue)
    lines[4] = " ".join(lines[4].split()[:-2])  # the file name and 38 values
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="line 5: expected a file name and 40 values, found 39 fields"):
        import_celeba(root, "Blond_Hair", "Male")


def test_celeba_missing_pieces(celeba, tmp_path):
    root, attrs = celeba
    with pytest.raises(DatasetError, match="'Hair_Colour' is not one of its attributes"):
        import_celeba(root, "Hair_Colour", "Male")
    part = root / "list_eval_partition.txt"
    part.write_text("".join(part.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(DatasetError, match=f"has no line for image {attrs.index[0]}"):
        import_celeba(root, "Blond_Hair", "Male")
    (root / "img_align_celeba" / attrs.index[2]).unlink()
    part.unlink()
    with pytest.raises(DatasetError, match="list_eval_partition.txt: does not exist"):
        import_celeba(root, "Blond_Hair", "Male")
    with pytest.raises(DatasetError, match="img_align_celeba: does not exist"):
        import_celeba(tmp_path / "elsewhere", "Blond_Hair", "Male")


def test_celeba_missing_image_names_its_line(celeba):
    root, attrs = celeba
    (root / "img_align_celeba" / attrs.index[2]).unlink()
    with pytest.raises(DatasetError) as err:
        import_celeba(root, "Blond_Hair", "Male")
    (issue,) = err.value.issues
    assert issue.row == 5 and issue.value == f"img_align_celeba/{attrs.index[2]}"


def test_cli_import(waterbirds, celeba, capsys):
    cli_main(["import", "waterbirds", "--src", str(waterbirds)])
    assert (waterbirds / "d3m_metadata.csv").is_file() and "d3m pipeline --data" in capsys.readouterr().out
    root, _ = celeba
    cli_main(["import", "celeba", "--src", str(root), "--target", "Young", "--spurious", "Male", "--age-subsample"])
    assert (root / "d3m_celeba_Young_Male_ratio4.csv").is_file()
    with pytest.raises(SystemExit, match=r"(?s)error: .*target attribute 'Nope'"):
        cli_main(["import", "celeba", "--src", str(root), "--target", "Nope"])
