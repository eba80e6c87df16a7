"""Import the standard benchmark layouts (Waterbirds, CelebA) into the dataset format.

Design: no image is copied, linked or moved. The import writes one extra table into the
downloaded folder itself, named after the task (Waterbirds: `d3m_metadata.csv`; CelebA:
`d3m_celeba_<target>_<spurious>[...].csv`), whose filenames are relative to that folder, and
the dataset is read with `DataConfig(root=folder, metadata=<that name>)` or, equivalently,
`root=<the table's path>` (`d3m pipeline --data folder/d3m_metadata.csv`). Why: Waterbirds'
folder already has a metadata.csv in its own format, which we must not overwrite; one CelebA
folder serves several tasks (Blond, Age), each with its own table; a new folder would need
copies (CelebA is 200K images) or symlinks, which the dataset validator rightly rejects when
they lead outside the folder.

Waterbirds (Sagawa et al.): `metadata.csv` with columns img_filename, y (0 landbird,
1 waterbird), split (0 train, 1 val, 2 test), place (0 land, 1 water). Groups are
"<label> on <place>"; place is kept as an attribute.

CelebA: `img_align_celeba/`, `list_attr_celeba.txt` (line 1 the image count, line 2 the 40
attribute names, then "<file> <40 values of 1 or -1>") and `list_eval_partition.txt`
("<file> <0|1|2>"). The user picks the target and the spurious attribute (CelebA-Blond:
Blond_Hair vs Male; CelebA-Age: Young vs Male); classes are "<target>" / "not <target>",
groups (class, spurious) and the other 38 attributes become yes/no attribute columns.
CelebA-Age (seeds/001 appendix B.1) "subsample[s] the training set such that the ratio of
samples in the majority vs. minority groups is 4:1": `majority_ratio=4` does this within each
class (the larger training group of the class is the majority one: young women and old men on
CelebA), keeping ratio x n_minor majority and n_minor minority examples with n_minor as large as
the counts allow; validation and test are untouched. Section 5 quotes 40K majority + 10K
minority training examples: `train_size=50000` additionally scales every training group down
proportionally to at most that total.

Every problem raises DatasetError naming the file, line, column and value at fault.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import DatasetError, DatasetIssue

from core.data.validate import validate_dataset
from core.io import write_csv_atomic

WATERBIRDS_TABLE = "d3m_metadata.csv"
WATERBIRDS_COLUMNS = ("img_filename", "y", "split", "place")
SPLITS = {"0": "train", "1": "val", "2": "test"}
BIRDS = {"0": "landbird", "1": "waterbird"}
PLACES = {"0": "land", "1": "water"}
CELEBA_IMAGES = "img_align_celeba"
CELEBA_ATTR = "list_attr_celeba.txt"
CELEBA_PARTITION = "list_eval_partition.txt"


def _issue(path: Path, detail: str, line: int | None = None, column: str | None = None,
           value: str | None = None) -> DatasetIssue:
    where = f", line {line}" if line is not None else ""
    where += f", column '{column}'" if column is not None else ""
    return DatasetIssue(f"{path}{where}: {detail}", str(path), line, column, value)


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise DatasetError([_issue(path, f"does not exist: the {what} layout needs it")])


def _check_images(folder: Path, filenames: list[str], source: Path, lines: list[int], column: str) -> None:
    """Every image must exist; a missing one is reported at its line of the source file."""
    issues = [_issue(source, f"image file {folder / name} does not exist", line, column, name)
              for name, line in zip(filenames, lines) if not (folder / name).is_file()]
    if issues:
        raise DatasetError(issues)


def _finish(folder: Path, table: pd.DataFrame, name: str) -> Path:
    """Write the table into the folder and check that it loads (no image opened).

    A table that fails (e.g. a group with no validation example) stays for inspection."""
    out = folder / name
    write_csv_atomic(out, table)
    issues = validate_dataset(folder, check_images=False, metadata=name)
    if issues:
        raise DatasetError(issues)
    return out


def import_waterbirds(src: str | Path, name: str = WATERBIRDS_TABLE) -> Path:
    """Write `name` (our metadata) into a Waterbirds folder; return its path."""
    folder = Path(src).resolve()
    csv = folder / "metadata.csv"
    _require(csv, "Waterbirds")
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError([_issue(csv, f"cannot be read as CSV ({type(exc).__name__}: {exc})")]) from exc
    raw.columns = [c.strip() for c in raw.columns]
    raw.index += 2  # line numbers: the header is line 1
    raw = raw[~(raw.apply(lambda col: col.str.strip()) == "").all(axis=1)]
    missing = [c for c in WATERBIRDS_COLUMNS if c not in raw.columns]
    if missing:
        raise DatasetError([_issue(csv, f"has no '{c}' column (its columns are: {', '.join(raw.columns)})", column=c)
                            for c in missing])
    issues = []
    for column, allowed in (("y", BIRDS), ("split", SPLITS), ("place", PLACES)):
        values = raw[column].str.strip()
        for line, value in values[~values.isin(list(allowed))].items():
            issues.append(_issue(csv, f"'{value}' is not one of {', '.join(allowed)}", int(line), column, value))
    if issues:
        raise DatasetError(issues)
    filenames = raw["img_filename"].str.strip()
    _check_images(folder, list(filenames), csv, list(raw.index), "img_filename")
    label = raw["y"].str.strip().map(BIRDS)
    place = raw["place"].str.strip().map(PLACES)
    table = pd.DataFrame({"filename": filenames, "label": label,
                          "split": raw["split"].str.strip().map(SPLITS), "group": label + " on " + place,
                          "place": place})
    return _finish(folder, table.reset_index(drop=True), name)


def read_celeba_attributes(path: Path) -> pd.DataFrame:
    """list_attr_celeba.txt -> DataFrame (index: file name; 40 bool columns, True for 1;
    `line`: the file's line listing the image)."""
    _require(path, "CelebA")
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DatasetError([_issue(path, "line 1 must be the number of images", 1, None, lines[0] if lines else "")])
    names = lines[1].split()
    rows, files, numbers, issues = [], [], [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            issues.append(_issue(path, f"expected a file name and {len(names)} values, found {len(parts)} fields", number))
            continue
        bad = [(names[i], v) for i, v in enumerate(parts[1:]) if v not in ("1", "-1")]
        issues += [_issue(path, f"value '{v}' is not 1 or -1", number, col, v) for col, v in bad]
        files.append(parts[0])
        numbers.append(number)
        rows.append([v == "1" for v in parts[1:]])
    if not issues and int(lines[0]) != len(files):
        issues.append(_issue(path, f"line 1 announces {lines[0].strip()} images but {len(files)} are listed", 1))
    if issues:
        raise DatasetError(issues)
    table = pd.DataFrame(rows, index=files, columns=names)
    table["line"] = numbers  # where each image is listed, for error messages
    return table


def read_celeba_partition(path: Path, files: pd.Index) -> np.ndarray:
    """Split name ('train'|'val'|'test') per file of `files`, from list_eval_partition.txt."""
    _require(path, "CelebA")
    split, issues = {}, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in SPLITS:
            issues.append(_issue(path, "expected '<file> <0|1|2>'", number, "partition", line.strip()))
            continue
        split[parts[0]] = SPLITS[parts[1]]
    missing = [f for f in files if f not in split]
    issues += [_issue(path, f"has no line for image {f} (listed in {CELEBA_ATTR})", value=f) for f in missing[:20]]
    if issues:
        raise DatasetError(issues)
    return np.asarray([split[f] for f in files])


def majority_subsample(labels: np.ndarray, spurious: np.ndarray, ratio: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Positions kept so that, within each class, majority:minority group sizes are ratio:1."""
    keep = []
    for c in np.unique(labels):
        a, b = (np.flatnonzero((labels == c) & (spurious == s)) for s in (False, True))
        major, minor = (a, b) if len(a) >= len(b) else (b, a)
        n_minor = int(min(len(minor), len(major) // ratio))
        keep += [rng.choice(major, int(ratio * n_minor), replace=False), rng.choice(minor, n_minor, replace=False)]
    return np.sort(np.concatenate(keep))


def cap_total(groups: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Positions kept when every group shrinks by the same factor to at most `total` in all."""
    if len(groups) <= total:
        return np.arange(len(groups))
    keep = [rng.choice(members, int(len(members) * total / len(groups)), replace=False)
            for members in (np.flatnonzero(groups == g) for g in np.unique(groups))]
    return np.sort(np.concatenate(keep))


def celeba_table_name(target: str, spurious: str, majority_ratio: float | None, train_size: int | None) -> str:
    suffix = (f"_ratio{majority_ratio:g}" if majority_ratio else "") + (f"_n{train_size}" if train_size else "")
    return f"d3m_celeba_{target}_{spurious}{suffix}.csv"


def import_celeba(src: str | Path, target: str, spurious: str, majority_ratio: float | None = None,
                  train_size: int | None = None, seed: int = 0) -> Path:
    """Write a CelebA task table into the CelebA folder; return its path.

    majority_ratio: subsample training majority:minority groups to this ratio per class (4 for
    CelebA-Age); train_size: then cap the training split at this many examples."""
    folder = Path(src).resolve()
    _require(folder / CELEBA_IMAGES, "CelebA")
    attr_path = folder / CELEBA_ATTR
    attrs = read_celeba_attributes(attr_path)
    lines = attrs.pop("line").to_numpy()
    for role, name in (("target", target), ("spurious", spurious)):
        if name not in attrs.columns:
            raise DatasetError([_issue(attr_path, f"{role} attribute '{name}' is not one of its attributes "
                                       f"({', '.join(attrs.columns)})", 2, None, name)])
    if target == spurious:
        raise ValueError(f"target and spurious attribute are both '{target}'")
    split = read_celeba_partition(folder / CELEBA_PARTITION, attrs.index)
    filenames = [f"{CELEBA_IMAGES}/{f}" for f in attrs.index]
    _check_images(folder, filenames, attr_path, list(lines), "file")
    y, s = attrs[target].to_numpy(), attrs[spurious].to_numpy()
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(split == "train")
    if majority_ratio:
        train = train[majority_subsample(y[train], s[train], majority_ratio, rng)]
    if train_size:
        train = train[cap_total(2 * y[train] + s[train], train_size, rng)]
    keep = np.sort(np.concatenate([train, np.flatnonzero(split != "train")]))
    table = celeba_table(attrs, filenames, split, target, spurious).iloc[keep].reset_index(drop=True)
    return _finish(folder, table, celeba_table_name(target, spurious, majority_ratio, train_size))


def celeba_table(attrs: pd.DataFrame, filenames: list[str], split: np.ndarray, target: str,
                 spurious: str) -> pd.DataFrame:
    """Rows in the dataset format: classes "<target>"/"not <target>", groups (class, spurious),
    every other attribute a yes/no column."""
    label = np.where(attrs[target].to_numpy(), target, f"not {target}")
    group = [f"{a}, {'' if b else 'not '}{spurious}" for a, b in zip(label, attrs[spurious].to_numpy())]
    other = [c for c in attrs.columns if c not in (target, spurious)]
    return pd.DataFrame({"filename": filenames, "label": label, "split": split, "group": group,
                         **{c: np.where(attrs[c].to_numpy(), "yes", "no") for c in other}})
